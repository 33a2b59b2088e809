"""Chat in the terminal with a model from a YAML config: streamed replies, multi-turn history.

    python -m mindformers.chat --config configs/llama/predict_llama_tiny.yaml [--system "Be brief."]
        [--chat_template tokenizer_config.json] [--use_chat_template False] [--max_new_tokens 64]
        [--options key.path=value ...]

Each user line is appended to the conversation, rendered with the chat template (`--chat_template`, a
tokenizer_config.json or a jinja2 file; else the tokenizer's own; else, or with --use_chat_template False /
generation_config.use_chat_template: False, a plain "User:/Assistant:" layout) and
answered with the YAML's generation_config, the reply streamed as it is generated. When the conversation no
longer fits model_config.max_position_embedding, the oldest exchanges are dropped (the system prompt stays).
Commands: /reset clears the history, /exit (or end of input) quits.
"""
import argparse
import os
import sys
from typing import Dict, List, Optional

from .tokenization.chat_template import PLAIN_STOP, PLAIN_TEMPLATE


class _Printer:
    """A TextStreamer that writes to a given stream (stdout by default)."""

    def __new__(cls, tokenizer, out):
        from .generation import TextStreamer

        class Printer(TextStreamer):
            def on_finalized_text(self, text: str, stream_end: bool = False):
                out.write(text + ("\n" if stream_end else ""))
                out.flush()

        return Printer(tokenizer)


class ChatSession:
    """A conversation with `network`: `reply(text)` streams and returns the assistant's answer."""

    def __init__(self, network, tokenizer, generation_config, system: Optional[str] = None,
                 chat_template: Optional[str] = None, out=None, use_chat_template: bool = True):
        self.network, self.tokenizer, self.generation_config = network, tokenizer, generation_config
        self.system = system
        own = chat_template or getattr(tokenizer, "chat_template", None)
        self.template = own if use_chat_template and own else PLAIN_TEMPLATE
        self.stop = PLAIN_STOP if self.template is PLAIN_TEMPLATE else []
        self.out = out or sys.stdout
        self.history: List[Dict[str, str]] = []
        self.limit = int(network.config.max_position_embedding)

    def reset(self):
        self.history = []

    def _messages(self) -> List[Dict[str, str]]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + self.history

    def _prompt_ids(self) -> List[int]:
        from .tokenization.chat_template import encode_chat

        budget = self.generation_config.new_token_budget(0)
        while True:
            ids = encode_chat(self._messages(), self.tokenizer, chat_template=self.template)
            if len(ids) + budget <= self.limit:
                return ids
            if len(self.history) <= 1:
                self.history = []
                raise ValueError(f"the message is {len(ids)} tokens; with {budget} new tokens it does not fit "
                                 f"max_position_embedding {self.limit}")
            self.history = self.history[2:]  # drop the oldest user/assistant exchange

    def reply(self, text: str) -> str:
        from .generation import generate

        self.history.append({"role": "user", "content": text})
        ids = self._prompt_ids()
        stop = list(self.generation_config.stop_strings or []) + self.stop
        config = self.generation_config.update(stop_strings=stop or None)
        new_ids = generate(self.network, [ids], config, tokenizer=self.tokenizer,
                           streamer=_Printer(self.tokenizer, self.out))[0]
        answer = self.tokenizer.decode(new_ids, skip_special_tokens=True)
        for s in stop:
            answer = answer.split(s)[0]
        answer = answer.strip()
        self.history.append({"role": "assistant", "content": answer})
        return answer


def _bool(text: str) -> bool:
    if text not in ("True", "False", "true", "false"):
        raise argparse.ArgumentTypeError(f"expected True or False, got '{text}'")
    return text in ("True", "true")


def _read_template(path: Optional[str]) -> Optional[str]:
    if not path:
        return None
    if path.endswith(".json") or os.path.isdir(path):
        from .tokenization.chat_template import load_chat_template
        return load_chat_template(path)
    with open(path, encoding="utf-8") as f:
        return f.read()


def main(argv=None, stdin=None, stdout=None) -> int:
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    parser = argparse.ArgumentParser(prog="python -m mindformers.chat", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--system", default=None, help="a system prompt")
    parser.add_argument("--chat_template", default=None, help="tokenizer_config.json or a jinja2 file")
    parser.add_argument("--use_chat_template", type=_bool, default=None,
                        help="True (default): render the conversation with the chat template; False: a plain "
                             "User:/Assistant: transcript (overrides generation_config.use_chat_template)")
    parser.add_argument("--max_new_tokens", type=int, default=None)
    parser.add_argument("--options", nargs="*", default=[], help="key.path=value config overrides")
    args = parser.parse_args(argv)

    from .config import load_config
    from .core.context import build_context
    from .config.loader import parse_options
    from .generation.predict import predict_generation_config
    from .trainer.builders import build_model, build_tokenizer

    try:
        config = load_config(args.config, parse_options(args.options))
        build_context(config)
        tokenizer = build_tokenizer(config)
        if tokenizer is None:
            raise ValueError(f"{args.config}: chat needs processor.tokenizer (or pretrained_model_dir)")
        network = build_model(config)
        network.set_train(False)
        generation = predict_generation_config(config)
        if args.max_new_tokens:
            generation = generation.update(max_new_tokens=args.max_new_tokens)
        use_template = args.use_chat_template if args.use_chat_template is not None else generation.use_chat_template
        session = ChatSession(network, tokenizer, generation.update(use_chat_template=None), args.system,
                              _read_template(args.chat_template), stdout, use_template is not False)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    stdout.write(f"chat with {type(network).__name__} ({args.config}); /reset clears the history, /exit quits\n")
    while True:
        stdout.write("> ")
        stdout.flush()
        line = stdin.readline()
        if not line:
            stdout.write("\n")
            return 0
        text = line.strip()
        if text == "/exit":
            return 0
        if text == "/reset":
            session.reset()
            stdout.write("(history cleared)\n")
            continue
        if not text:
            continue
        try:
            session.reply(text)
        except ValueError as err:
            stdout.write(f"(not answered: {err})\n")


if __name__ == "__main__":
    sys.exit(main())
