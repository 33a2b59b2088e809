"""Streamers: receive token ids from generate() as they are produced and turn them into text."""
from queue import Queue
from typing import Optional

import numpy as np


class TextStreamer:
    """Prints the continuation as it is generated (batch of one).

    generate() calls `put` with the prompt ids first, then with each new token, then `end`. Text is emitted
    as the growing decode's new suffix, held back while it ends in an incomplete character (U+FFFD), so the
    emitted pieces always join to the final decoded output.
    """

    def __init__(self, tokenizer, skip_prompt: bool = True, skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.skip_prompt = skip_prompt
        self.skip_special_tokens = skip_special_tokens
        self.token_cache = []
        self.printed = 0
        self.next_is_prompt = True

    def put(self, value):
        """Take the next ids (the prompt on the first call)."""
        ids = np.asarray(value).reshape(-1).tolist()
        if self.next_is_prompt:
            self.next_is_prompt = False
            if self.skip_prompt:
                return
        self.token_cache.extend(ids)
        text = self.tokenizer.decode(self.token_cache, skip_special_tokens=self.skip_special_tokens)
        if text.endswith("\ufffd"):
            return
        self.on_finalized_text(text[self.printed:])
        self.printed = len(text)

    def end(self):
        """Flush what is left and reset for the next generate() call."""
        text = self.tokenizer.decode(self.token_cache, skip_special_tokens=self.skip_special_tokens)
        self.on_finalized_text(text[self.printed:], stream_end=True)
        self.token_cache, self.printed, self.next_is_prompt = [], 0, True

    def on_finalized_text(self, text: str, stream_end: bool = False):
        """Called with each new piece of text; prints it."""
        print(text, end="\n" if stream_end else "", flush=True)


class TextIteratorStreamer(TextStreamer):
    """Queues the text pieces for another thread: run generate() in a thread and iterate over this."""

    def __init__(self, tokenizer, skip_prompt: bool = True, timeout: Optional[float] = None,
                 skip_special_tokens: bool = True):
        super().__init__(tokenizer, skip_prompt, skip_special_tokens)
        self.queue: Queue = Queue()
        self.timeout = timeout
        self._stop = object()

    def on_finalized_text(self, text: str, stream_end: bool = False):
        if text:
            self.queue.put(text, timeout=self.timeout)
        if stream_end:
            self.queue.put(self._stop, timeout=self.timeout)

    def __iter__(self):
        return self

    def __next__(self) -> str:
        value = self.queue.get(timeout=self.timeout)
        if value is self._stop:
            raise StopIteration
        return value
