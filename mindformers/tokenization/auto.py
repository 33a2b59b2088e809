"""AutoTokenizer: the tokenizer of a Hugging Face model directory (or GGUF file), whichever backend it needs."""
import os
from typing import Any, Dict

from ..tools.paths import resolve_repo_path
from ..tools.textfile import read_json
from .base import PreTrainedTokenizerBase

# transformers writes this for "no limit"
_NO_LIMIT = 10 ** 9
_SPECIAL_KEYS = ("unk_token", "bos_token", "eos_token", "pad_token")
_COMMON_KEYS = ("padding_side", "truncation_side", "clean_up_tokenization_spaces")


def _token(value):
    """A special token from tokenizer_config.json: a string or an AddedToken dict {"content": ...}."""
    return value.get("content") if isinstance(value, dict) else value


def read_tokenizer_config(model_dir: str) -> Dict[str, Any]:
    """tokenizer_config.json of `model_dir` ({} if absent), with chat_template.jinja folded in."""
    config = {}
    path = os.path.join(model_dir, "tokenizer_config.json")
    if os.path.isfile(path):
        config = read_json(path)
        if not isinstance(config, dict):
            raise ValueError(f"{path}: expected a JSON object, got {type(config).__name__}")
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, ...]
        template = {t.get("name"): t.get("template") for t in template}.get("default")
    jinja = os.path.join(model_dir, "chat_template.jinja")
    if template is None and os.path.isfile(jinja):
        with open(jinja, encoding="utf-8") as f:
            template = f.read()
    config["chat_template"] = template
    return config


def _common_kwargs(config: Dict[str, Any]) -> Dict[str, Any]:
    kwargs = {k: config[k] for k in _COMMON_KEYS if config.get(k) is not None}
    limit = config.get("model_max_length")
    if isinstance(limit, (int, float)) and limit < _NO_LIMIT:
        kwargs["model_max_length"] = int(limit)
    return kwargs


class AutoTokenizer:
    """`AutoTokenizer.from_pretrained(path)`: tokenizer.json -> PreTrainedTokenizerFast (what transformers loads
    first), else tokenizer.model -> LlamaTokenizer (sentencepiece), else vocab.json + merges.txt ->
    Qwen2Tokenizer; a .gguf file -> the tokenizer in its metadata. tokenizer_config.json supplies the special
    tokens, padding side and chat template; keyword arguments override it.
    """

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str, **kwargs: Any) -> PreTrainedTokenizerBase:
        path = resolve_repo_path(pretrained_model_name_or_path, "AutoTokenizer path")
        if os.path.isfile(path) and path.endswith(".gguf"):
            from .gguf import tokenizer_from_gguf
            return tokenizer_from_gguf(path, **kwargs)
        if not os.path.isdir(path):
            raise ValueError(f"AutoTokenizer path {path} is neither a model directory nor a .gguf file")
        config = read_tokenizer_config(path)
        files = {name: os.path.join(path, name) for name in ("tokenizer.json", "tokenizer.model", "vocab.json",
                                                             "merges.txt")}
        has = {name: os.path.isfile(file) for name, file in files.items()}
        if has["tokenizer.json"] or (has["vocab.json"] and has["merges.txt"]):
            from .hf_tokenizer import PreTrainedTokenizerFast, Qwen2Tokenizer
            # null means "none" here (Qwen has no bos/unk); add_bos/eos_token are not read, as in
            # transformers: the tokenizer.json post-processor decides
            options = {k: _token(config.get(k)) for k in _SPECIAL_KEYS}
            extra = config.get("additional_special_tokens") or config.get("extra_special_tokens") or []
            options["additional_special_tokens"] = [_token(t) for t in extra] if isinstance(extra, list) else []
            options.update(_common_kwargs(config), chat_template=config["chat_template"])
            options.update(kwargs)
            if has["tokenizer.json"]:
                return PreTrainedTokenizerFast(tokenizer_file=files["tokenizer.json"], **options)
            return Qwen2Tokenizer(vocab_file=files["vocab.json"], merges_file=files["merges.txt"], **options)
        if has["tokenizer.model"]:
            from .llama_tokenizer import LlamaTokenizer
            # null keeps LlamaTokenizer's default (pad_token <unk>); `legacy` is not read: sentencepiece's own
            # handling is the only mode
            options = {k: _token(config[k]) for k in _SPECIAL_KEYS if isinstance(_token(config.get(k)), str)}
            options.update({k: config[k] for k in ("add_bos_token", "add_eos_token")
                            if isinstance(config.get(k), bool)})
            options.update(_common_kwargs(config))
            options.update(kwargs)
            template = options.pop("chat_template", config["chat_template"])
            tokenizer = LlamaTokenizer(vocab_file=files["tokenizer.model"], **options)
            tokenizer.chat_template = template
            return tokenizer
        raise FileNotFoundError(f"tokenizer directory {path} has no tokenizer: looked for tokenizer.json, "
                                f"tokenizer.model, and vocab.json with merges.txt")
