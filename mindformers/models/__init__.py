"""Model families; importing this package registers their configs and models."""
from .base import BaseConfig, causal_lm_loss
from .llama import LlamaConfig, LlamaForCausalLM

__all__ = ["BaseConfig", "causal_lm_loss", "LlamaConfig", "LlamaForCausalLM"]
