"""Qwen3 dense models: Llama decoder with qk-norm and an explicit head_dim (importing registers them, also as the
Hugging Face model_type "qwen3")."""
from .qwen3 import Qwen3Config, Qwen3ForCausalLM, qk_norm_attention, qwen3_layer
from . import hf  # noqa: F401  (registers the HF family)

__all__ = ["Qwen3Config", "Qwen3ForCausalLM", "qk_norm_attention", "qwen3_layer"]
