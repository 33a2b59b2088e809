"""Tokenizers; importing this package registers them as TOKENIZER components."""
from .base import PreTrainedTokenizerBase, resolve_repo_path
from .llama_tokenizer import LlamaTokenizer

__all__ = ["PreTrainedTokenizerBase", "LlamaTokenizer", "resolve_repo_path"]
