"""Qwen3-MoE (Qwen team 2025): Qwen3 attention with qk-norm, and every feed-forward a top-k routed MoE.

Parameter names are Hugging Face's Qwen3MoeForCausalLM ones (`model.layers.N.mlp.gate.weight`,
`model.layers.N.mlp.experts.E.gate_proj.weight`, ...).
"""
from mindformers.tools.register import MindFormerModuleType, MindFormerRegister

from ..mixtral import MixtralConfig, MoeForCausalLM
from ..qwen3 import Qwen3Config


@MindFormerRegister.register(MindFormerModuleType.CONFIG)
class Qwen3MoeConfig(MixtralConfig, Qwen3Config):
    """MixtralConfig's MoE keys and Qwen3Config's head_dim/qk_norm, with Qwen3-MoE's defaults."""

    def __init__(self, router_aux_loss_coef: float = 0.001, **kwargs):
        super().__init__(router_aux_loss_coef=router_aux_loss_coef, **kwargs)


@MindFormerRegister.register(MindFormerModuleType.MODELS)
class Qwen3MoeForCausalLM(MoeForCausalLM):
    """Qwen3-MoE with a language-model head (same interface as LlamaForCausalLM)."""

    config_class = Qwen3MoeConfig
