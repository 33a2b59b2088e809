"""Tokenizers; importing this package registers them as TOKENIZER components."""
from ..tools.paths import resolve_repo_path
from .base import PreTrainedTokenizerBase
from .llama_tokenizer import LlamaTokenizer
from .processor import LlamaProcessor

__all__ = ["PreTrainedTokenizerBase", "LlamaTokenizer", "LlamaProcessor", "resolve_repo_path"]
