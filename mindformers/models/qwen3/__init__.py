"""Qwen3 dense models: Llama decoder with qk-norm and an explicit head_dim (importing registers them)."""
from .qwen3 import Qwen3Config, Qwen3ForCausalLM

__all__ = ["Qwen3Config", "Qwen3ForCausalLM"]
