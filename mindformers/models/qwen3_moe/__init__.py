"""Qwen3-MoE: Qwen3 attention (qk-norm) with MoE feed-forward blocks (importing registers them, also as the
Hugging Face model_type "qwen3_moe")."""
from .qwen3_moe import Qwen3MoeConfig, Qwen3MoeForCausalLM
from . import hf  # noqa: F401  (registers the HF family)

__all__ = ["Qwen3MoeConfig", "Qwen3MoeForCausalLM"]
