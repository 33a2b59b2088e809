"""Transformer building blocks shared by the model families."""
from .attention import CausalSelfAttention, causal_mask, check_flash_attention
from .layers import Embedding, Linear, RMSNorm, SwiGLU, llama_ffn_hidden_size
from .moe import EXPERT_NAMES, MoE, Expert, load_balancing_loss, route
from .rotary import ROPE_SCALING, RotaryEmbedding, apply_rotary, check_extend_method, from_rope_scaling, rope_tables, \
    rotate_half

__all__ = ["CausalSelfAttention", "causal_mask", "check_flash_attention", "Embedding", "Linear", "RMSNorm",
           "SwiGLU", "llama_ffn_hidden_size", "EXPERT_NAMES", "MoE", "Expert", "load_balancing_loss", "route",
           "ROPE_SCALING", "RotaryEmbedding", "apply_rotary",
           "check_extend_method", "from_rope_scaling", "rope_tables", "rotate_half"]
