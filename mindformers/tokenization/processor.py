"""Processors (upstream `processor:` section): a tokenizer plus the settings that turn text into model inputs."""
from typing import Optional, Union

from ..tools.register import MindFormerModuleType, MindFormerRegister, build_from_config


@MindFormerRegister.register(MindFormerModuleType.PROCESSOR)
class LlamaProcessor:
    """Tokenizes text for a Llama-style model: `processor("text")` -> {'input_ids', 'attention_mask'}."""

    def __init__(self, tokenizer=None, max_length: Optional[int] = None, padding: Union[bool, str] = False,
                 return_tensors: Optional[str] = "ms"):
        if isinstance(tokenizer, dict) or hasattr(tokenizer, "keys"):
            tokenizer = build_from_config(tokenizer, MindFormerModuleType.TOKENIZER)
        if tokenizer is None:
            raise ValueError("LlamaProcessor needs processor.tokenizer (e.g. {type: LlamaTokenizer, vocab_file: ...})")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.padding = padding
        self.return_tensors = return_tensors

    def __call__(self, text, **kwargs):
        options = {"max_length": self.max_length, "padding": self.padding,
                   "truncation": self.max_length is not None, "return_tensors": self.return_tensors}
        options.update(kwargs)
        return self.tokenizer(text, **options)

