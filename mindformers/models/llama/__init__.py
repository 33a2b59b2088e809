"""Llama: the reference decoder the other families assemble from the same parts (models/decoder.py);
importing registers the config, the model and the Hugging Face model_type "llama"."""
from .llama import LlamaForCausalLM, llama_layer
from .llama_config import LlamaConfig
from . import hf  # noqa: F401  (registers the HF family)

__all__ = ["LlamaConfig", "LlamaForCausalLM", "llama_layer"]
