"""Transformer building blocks shared by the model families."""
from .attention import CausalSelfAttention, causal_mask, check_flash_attention
from .layers import Embedding, Linear, RMSNorm, SwiGLU, llama_ffn_hidden_size
from .rotary import ROPE_SCALING, RotaryEmbedding, apply_rotary, check_extend_method, rope_tables, rotate_half

__all__ = ["CausalSelfAttention", "causal_mask", "check_flash_attention", "Embedding", "Linear", "RMSNorm",
           "SwiGLU", "llama_ffn_hidden_size", "ROPE_SCALING", "RotaryEmbedding", "apply_rotary",
           "check_extend_method", "rope_tables", "rotate_half"]
