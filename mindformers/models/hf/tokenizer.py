"""The tokenizer of a Hugging Face directory (through AutoTokenizer)."""


def tokenizer_from_hf(model_dir: str):
    """The tokenizer of `model_dir` (tokenizer.json, tokenizer.model, ...) or of a .gguf file."""
    from mindformers.tokenization.auto import AutoTokenizer
    from mindformers.tools.paths import resolve_repo_path

    return AutoTokenizer.from_pretrained(resolve_repo_path(model_dir, "pretrained_model_dir"))
