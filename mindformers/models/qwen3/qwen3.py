"""Qwen3 (Qwen team 2025): the Llama decoder with an RMSNorm on every q and k head (qk-norm), no qkv bias, and a
head_dim that need not be hidden_size / num_heads (Qwen3-0.6B: 1024 wide, 16 heads of 128).

Parameter names are Hugging Face's Qwen3ForCausalLM ones (`model.layers.N.self_attn.q_norm.weight`, ...).
"""
from typing import Optional

from mindformers.tools.register import MindFormerModuleType, MindFormerRegister

from ..llama import LlamaConfig, LlamaForCausalLM
from ..llama.llama_config import _bool, _positive_int


@MindFormerRegister.register(MindFormerModuleType.CONFIG)
class Qwen3Config(LlamaConfig):
    """LlamaConfig plus `head_dim` (None: hidden_size / num_heads) and `qk_norm`, with Qwen3's defaults."""

    head_dim = None  # a plain attribute here, shadowing LlamaConfig's derived property

    def __init__(self, head_dim: Optional[int] = None, qk_norm: bool = True, theta: float = 1000000.0,
                 rms_norm_eps: float = 1e-6, vocab_size: int = 151936, **kwargs):
        super().__init__(theta=theta, rms_norm_eps=rms_norm_eps, vocab_size=vocab_size, **kwargs)
        if head_dim is not None:
            _positive_int("head_dim", head_dim)
            if head_dim % 2:
                raise ValueError(f"model_config.head_dim must be even for rotary embeddings, got {head_dim}")
        _bool("qk_norm", qk_norm)
        self.head_dim = head_dim or self.hidden_size // self.num_heads
        self.qk_norm = qk_norm

    def num_params(self, exclude_embeddings: bool = False) -> int:
        """LlamaConfig's count plus the two per-head RMSNorm weights of each layer."""
        return super().num_params(exclude_embeddings) + self.qk_norm * self.num_layers * 2 * self.head_dim


@MindFormerRegister.register(MindFormerModuleType.MODELS)
class Qwen3ForCausalLM(LlamaForCausalLM):
    """Qwen3 with a language-model head (same interface as LlamaForCausalLM)."""

    config_class = Qwen3Config
