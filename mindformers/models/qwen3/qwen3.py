"""Qwen3 (Qwen team 2025): the Llama decoder with an RMSNorm on every q and k head (qk-norm), no qkv bias, and a
head_dim that need not be hidden_size / num_heads (Qwen3-0.6B: 1024 wide, 16 heads of 128).

Parameter names are Hugging Face's Qwen3ForCausalLM ones (`model.layers.N.self_attn.q_norm.weight`, ...).
"""
from mindformers.tools.register import MindFormerModuleType, MindFormerRegister

from ..base import boolean
from ..decoder import DecoderForCausalLM, DecoderLayer, gqa_attention, rms_norm, swiglu
from ..llama import LlamaConfig


@MindFormerRegister.register(MindFormerModuleType.CONFIG)
class Qwen3Config(LlamaConfig):
    """LlamaConfig plus `qk_norm`, with Qwen3's defaults (head_dim may be set explicitly)."""

    def __init__(self, qk_norm: bool = True, theta: float = 1000000.0, rms_norm_eps: float = 1e-6,
                 vocab_size: int = 151936, **kwargs):
        super().__init__(theta=theta, rms_norm_eps=rms_norm_eps, vocab_size=vocab_size, **kwargs)
        boolean("qk_norm", qk_norm)
        self.qk_norm = qk_norm

    def num_params(self, exclude_embeddings: bool = False) -> int:
        """LlamaConfig's count plus the two per-head RMSNorm weights of each layer."""
        return super().num_params(exclude_embeddings) + self.qk_norm * self.num_layers * 2 * self.head_dim


def qk_norm_attention(config: Qwen3Config):
    """GQA attention with an RMSNorm over each q and k head before RoPE (when config.qk_norm)."""
    if not config.qk_norm:
        return gqa_attention(config)
    return gqa_attention(config, q_norm=rms_norm(config, config.head_dim),
                         k_norm=rms_norm(config, config.head_dim))


def qwen3_layer(config: Qwen3Config, index: int) -> DecoderLayer:
    """One Qwen3 block: the Llama block with qk-norm attention."""
    return DecoderLayer(rms_norm(config), qk_norm_attention(config), rms_norm(config), swiglu(config))


@MindFormerRegister.register(MindFormerModuleType.MODELS)
class Qwen3ForCausalLM(DecoderForCausalLM):
    """Qwen3 with a language-model head (interface: DecoderForCausalLM)."""

    config_class = Qwen3Config
    build_layer = staticmethod(qwen3_layer)
