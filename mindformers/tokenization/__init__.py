"""Tokenizers; importing this package registers them as TOKENIZER components."""
from ..tools.paths import resolve_repo_path
from .auto import AutoTokenizer
from .base import PreTrainedTokenizerBase
from .hf_tokenizer import PreTrainedTokenizerFast, Qwen2Tokenizer
from .llama_tokenizer import LlamaTokenizer
from .processor import LlamaProcessor

__all__ = ["AutoTokenizer", "PreTrainedTokenizerBase", "PreTrainedTokenizerFast", "Qwen2Tokenizer",
           "LlamaTokenizer", "LlamaProcessor", "resolve_repo_path"]
