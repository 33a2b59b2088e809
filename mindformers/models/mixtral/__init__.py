"""Mixture-of-experts Llama decoders: the shared MoE blocks and Mixtral (importing registers them)."""
from .mixtral import MixtralConfig, MixtralForCausalLM, MoeDecoderLayer, MoeForCausalLM, MoeModel

__all__ = ["MixtralConfig", "MixtralForCausalLM", "MoeDecoderLayer", "MoeForCausalLM", "MoeModel"]
