"""Qwen2 / Qwen2.5: the Llama decoder with biased q/k/v projections (importing registers config and model)."""
from .qwen2 import Qwen2Config, Qwen2ForCausalLM

__all__ = ["Qwen2Config", "Qwen2ForCausalLM"]
