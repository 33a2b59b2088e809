"""Llama family: config and causal-LM model (importing registers both)."""
from .llama import LlamaDecoderLayer, LlamaForCausalLM, LlamaModel
from .llama_config import LlamaConfig

__all__ = ["LlamaConfig", "LlamaDecoderLayer", "LlamaForCausalLM", "LlamaModel"]
