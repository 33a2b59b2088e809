"""Qwen2 / Qwen2.5: the Llama decoder with biased q/k/v projections (importing registers config, model and the
Hugging Face model_type "qwen2")."""
from .qwen2 import Qwen2Config, Qwen2ForCausalLM
from . import hf  # noqa: F401  (registers the HF family)

__all__ = ["Qwen2Config", "Qwen2ForCausalLM"]
