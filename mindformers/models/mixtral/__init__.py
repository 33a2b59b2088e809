"""Mixtral, and the MoE config and feed-forward part Qwen3-MoE shares (importing registers them, also as the
Hugging Face model_type "mixtral")."""
from .mixtral import MixtralConfig, MixtralForCausalLM, mixtral_layer, moe_ffn
from . import hf  # noqa: F401  (registers the HF family)

__all__ = ["MixtralConfig", "MixtralForCausalLM", "mixtral_layer", "moe_ffn"]
