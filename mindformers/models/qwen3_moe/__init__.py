"""Qwen3-MoE: Qwen3 attention (qk-norm) with MoE feed-forward blocks (importing registers them)."""
from .qwen3_moe import Qwen3MoeConfig, Qwen3MoeForCausalLM

__all__ = ["Qwen3MoeConfig", "Qwen3MoeForCausalLM"]
