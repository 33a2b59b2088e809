"""The tokenizer of an HF directory: tokenizer.model (sentencepiece) -> LlamaTokenizer."""
import json
import os


def _token(value):
    """A special token from tokenizer_config.json: a string or an AddedToken dict {"content": ...}."""
    return value.get("content") if isinstance(value, dict) else value


def tokenizer_from_hf(model_dir: str):
    """LlamaTokenizer from `model_dir`/tokenizer.model, with the special tokens of tokenizer_config.json."""
    from mindformers.tokenization import LlamaTokenizer
    from mindformers.tools.paths import resolve_repo_path

    model_dir = resolve_repo_path(model_dir, "pretrained_model_dir")
    if model_dir.endswith(".gguf"):
        raise ValueError(f"pretrained_model_dir {model_dir}: the tokenizer inside GGUF files is not read; set "
                         f"processor.tokenizer in the YAML (e.g. the tokenizer.model of the original model)")
    vocab = os.path.join(model_dir, "tokenizer.model")
    if not os.path.isfile(vocab):
        if os.path.isfile(os.path.join(model_dir, "tokenizer.json")):
            raise ValueError(f"pretrained_model_dir {model_dir} has only tokenizer.json: the HF `tokenizers` "
                             f"backend comes with issue 4; until then set processor.tokenizer in the YAML")
        raise FileNotFoundError(f"pretrained_model_dir {model_dir} has no tokenizer.model; set "
                                f"processor.tokenizer in the YAML")
    kwargs = {}
    config_path = os.path.join(model_dir, "tokenizer_config.json")
    if os.path.isfile(config_path):
        with open(config_path, encoding="utf-8") as f:
            tok_cfg = json.load(f)
        for key in ("unk_token", "bos_token", "eos_token", "pad_token"):
            if isinstance(_token(tok_cfg.get(key)), str):
                kwargs[key] = _token(tok_cfg[key])
        for key in ("add_bos_token", "add_eos_token"):
            if isinstance(tok_cfg.get(key), bool):
                kwargs[key] = tok_cfg[key]
    return LlamaTokenizer(vocab_file=vocab, **kwargs)
