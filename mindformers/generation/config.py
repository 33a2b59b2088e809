"""GenerationConfig: decoding settings with the Hugging Face / upstream key names."""
import json
import os
from typing import List, Optional, Union

_INT_KEYS = ("max_length", "max_new_tokens", "min_new_tokens", "top_k", "num_beams")


class GenerationConfig:
    """How `generate` decodes: length limits, greedy/sampling/beam search, and stop conditions.

    `max_new_tokens` wins over `max_length` (prompt + new tokens) when both are set, as in Hugging Face.
    `eos_token_id` may be an int or a list; None falls back to the tokenizer's eos id.
    """

    def __init__(self, max_length: Optional[int] = None, max_new_tokens: Optional[int] = None,
                 min_new_tokens: int = 0, do_sample: bool = False, temperature: float = 1.0, top_k: int = 50,
                 top_p: float = 1.0, repetition_penalty: float = 1.0, num_beams: int = 1,
                 length_penalty: float = 1.0, eos_token_id: Optional[Union[int, List[int]]] = None,
                 pad_token_id: Optional[int] = None, bos_token_id: Optional[int] = None,
                 stop_strings: Optional[Union[str, List[str]]] = None, seed: Optional[int] = None,
                 use_past: Optional[bool] = None, use_chat_template: Optional[bool] = None):
        self.max_length = max_length
        self.max_new_tokens = max_new_tokens
        self.min_new_tokens = min_new_tokens
        self.do_sample = do_sample
        self.temperature = temperature
        self.top_k = top_k
        self.top_p = top_p
        self.repetition_penalty = repetition_penalty
        self.num_beams = num_beams
        self.length_penalty = length_penalty
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        self.stop_strings = [stop_strings] if isinstance(stop_strings, str) else stop_strings
        self.seed = seed
        self.use_past = use_past
        # text prompts become a user turn rendered with the tokenizer's chat template (None: off, chat: on)
        self.use_chat_template = use_chat_template
        self.validate()

    def validate(self):
        """Raise a ValueError naming the first bad key."""
        for key in _INT_KEYS:
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"generation_config.{key} must be an int >= 0, got {value!r}")
        if self.use_chat_template not in (None, True, False):
            raise ValueError(f"generation_config.use_chat_template must be True or False, got "
                             f"{self.use_chat_template!r}")
        if self.num_beams < 1:
            raise ValueError(f"generation_config.num_beams must be >= 1, got {self.num_beams}")
        if self.temperature <= 0:
            raise ValueError(f"generation_config.temperature must be > 0, got {self.temperature!r} "
                             f"(use do_sample: False for greedy decoding)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"generation_config.top_p must be in (0, 1], got {self.top_p!r}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"generation_config.repetition_penalty must be > 0, got {self.repetition_penalty!r}")
        if self.do_sample and self.num_beams > 1:
            raise ValueError("generation_config: beam search with do_sample=True is not implemented; "
                             "set num_beams: 1 or do_sample: False")
        eos = self.eos_token_id
        if eos is not None and not isinstance(eos, int) and not (
                isinstance(eos, (list, tuple)) and all(isinstance(e, int) for e in eos)):
            raise ValueError(f"generation_config.eos_token_id must be an int or a list of ints, got {eos!r}")

    @property
    def eos_ids(self) -> List[int]:
        """eos_token_id as a list (empty when unset)."""
        eos = self.eos_token_id
        return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)

    def new_token_budget(self, prompt_len: int) -> int:
        """How many tokens to generate after a prompt of prompt_len tokens."""
        if self.max_new_tokens is not None:
            return self.max_new_tokens
        if self.max_length is not None:
            return max(self.max_length - prompt_len, 0)
        return 20  # Hugging Face's default max_length is 20 tokens in all

    def update(self, **kwargs) -> "GenerationConfig":
        """A copy with the given keys replaced (unknown keys are an error)."""
        values = self.to_dict()
        for key, value in kwargs.items():
            if key not in values:
                raise ValueError(f"unknown generation_config key {key!r}; valid: {', '.join(values)}")
            values[key] = value
        return GenerationConfig(**values)

    def to_dict(self) -> dict:
        return dict(vars(self))

    @classmethod
    def from_dict(cls, values) -> "GenerationConfig":
        """From a mapping (a YAML `generation_config` section); unknown keys are an error."""
        values = dict(values or {})
        known = cls().to_dict()
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown generation_config keys {unknown}; valid: {', '.join(known)}")
        return cls(**values)

    @classmethod
    def from_pretrained(cls, path: str, **overrides) -> "GenerationConfig":
        """From a Hugging Face generation_config.json (a file or the directory holding it), then `overrides`.

        Keys of the file we don't decode with (transformers_version, ...) are ignored; unknown `overrides`
        are an error, as in from_dict.
        """
        values = cls.read_pretrained(path)
        cls.from_dict(overrides)  # names and values of the overrides checked on their own first
        return cls(**{**values, **overrides})

    @classmethod
    def read_pretrained(cls, path: str) -> dict:
        """The keys of a generation_config.json that GenerationConfig knows, as a dict."""
        file = os.path.join(path, "generation_config.json") if os.path.isdir(path) else path
        try:
            with open(file, encoding="utf-8") as f:
                values = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{file}: not valid JSON ({err.msg} at line {err.lineno})") from None
        if not isinstance(values, dict):
            raise ValueError(f"{file}: expected a JSON object of generation keys")
        known = cls().to_dict()
        return {k: v for k, v in values.items() if k in known}

    def __repr__(self) -> str:
        return f"GenerationConfig({self.to_dict()})"
