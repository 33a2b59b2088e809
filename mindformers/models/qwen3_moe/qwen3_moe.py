"""Qwen3-MoE (Qwen team 2025): Qwen3 attention with qk-norm, and every feed-forward a top-k routed MoE.

Parameter names are Hugging Face's Qwen3MoeForCausalLM ones (`model.layers.N.mlp.gate.weight`,
`model.layers.N.mlp.experts.E.gate_proj.weight`, ...).
"""
from mindformers.modules import EXPERT_NAMES
from mindformers.tools.register import MindFormerModuleType, MindFormerRegister

from ..decoder import DecoderLayer, MoeForCausalLM, rms_norm
from ..mixtral import MixtralConfig, moe_ffn
from ..qwen3 import Qwen3Config, qk_norm_attention


@MindFormerRegister.register(MindFormerModuleType.CONFIG)
class Qwen3MoeConfig(MixtralConfig, Qwen3Config):
    """MixtralConfig's MoE keys and Qwen3Config's qk_norm, with Qwen3-MoE's defaults."""

    def __init__(self, router_aux_loss_coef: float = 0.001, **kwargs):
        super().__init__(router_aux_loss_coef=router_aux_loss_coef, **kwargs)


def qwen3_moe_layer(config: Qwen3MoeConfig, index: int) -> DecoderLayer:
    """One Qwen3-MoE block: qk-norm attention and a MoE under `mlp` with gate/up/down_proj experts."""
    return DecoderLayer(rms_norm(config), qk_norm_attention(config), rms_norm(config),
                        moe_ffn(config, EXPERT_NAMES["qwen"]))


@MindFormerRegister.register(MindFormerModuleType.MODELS)
class Qwen3MoeForCausalLM(MoeForCausalLM):
    """Qwen3-MoE with a language-model head (interface: DecoderForCausalLM; training adds the balancing loss)."""

    config_class = Qwen3MoeConfig
    build_layer = staticmethod(qwen3_moe_layer)
