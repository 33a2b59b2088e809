"""Mixtral (Jiang et al. 2024): Llama blocks whose feed-forward is a top-k routed set of SwiGLU experts
(mindformers.modules.MoE), trained with a load-balancing loss (decoder.MoeForCausalLM). Its config and `moe_ffn`
are shared with Qwen3-MoE.

Parameter names are Hugging Face's MixtralForCausalLM ones (`model.layers.N.block_sparse_moe.gate.weight`,
`model.layers.N.block_sparse_moe.experts.E.w1.weight`, ...).
"""
import numbers
from typing import Optional

from mindformers.modules import EXPERT_NAMES, MoE
from mindformers.tools.register import MindFormerModuleType, MindFormerRegister

from ..base import DTYPES, boolean, positive_int
from ..decoder import DecoderLayer, MoeForCausalLM, gqa_attention, rms_norm
from ..llama import LlamaConfig


@MindFormerRegister.register(MindFormerModuleType.CONFIG)
class MixtralConfig(LlamaConfig):
    """LlamaConfig plus the MoE keys (Hugging Face names); `intermediate_size` is each expert's width unless
    `moe_intermediate_size` is set."""

    def __init__(self, num_experts: int = 8, num_experts_per_tok: int = 2, moe_intermediate_size: Optional[int] = None,
                 norm_topk_prob: bool = True, router_aux_loss_coef: float = 0.02, theta: float = 1000000.0,
                 **kwargs):
        super().__init__(theta=theta, **kwargs)
        positive_int("num_experts", num_experts)
        positive_int("num_experts_per_tok", num_experts_per_tok)
        if num_experts_per_tok > num_experts:
            raise ValueError(f"model_config.num_experts_per_tok ({num_experts_per_tok}) must be <= num_experts "
                             f"({num_experts})")
        if moe_intermediate_size is not None:
            positive_int("moe_intermediate_size", moe_intermediate_size)
        boolean("norm_topk_prob", norm_topk_prob)
        if isinstance(router_aux_loss_coef, bool) or not isinstance(router_aux_loss_coef, numbers.Real) \
                or router_aux_loss_coef < 0:
            raise ValueError(f"model_config.router_aux_loss_coef must be a number >= 0, got {router_aux_loss_coef!r}")
        self.num_experts = num_experts
        self.num_experts_per_tok = num_experts_per_tok
        self.moe_intermediate_size = moe_intermediate_size
        self.norm_topk_prob = norm_topk_prob
        self.router_aux_loss_coef = router_aux_loss_coef

    @property
    def expert_ffn_size(self) -> int:
        """Width of one expert's SwiGLU."""
        return self.moe_intermediate_size or self.ffn_hidden_size

    def _expert_params(self, num_experts: int) -> int:
        return self.num_layers * num_experts * 3 * self.hidden_size * self.expert_ffn_size

    def num_params(self, exclude_embeddings: bool = False) -> int:
        """Parameter count: the dense-Llama count with each SwiGLU replaced by a router and the experts."""
        dense_ffn = self.num_layers * 3 * self.hidden_size * self.ffn_hidden_size
        router = self.num_layers * self.hidden_size * self.num_experts
        return super().num_params(exclude_embeddings) - dense_ffn + router + self._expert_params(self.num_experts)

    def num_active_params(self, exclude_embeddings: bool = False) -> int:
        """Parameters one token passes through: only num_experts_per_tok experts per layer."""
        unused = self.num_experts - self.num_experts_per_tok
        return self.num_params(exclude_embeddings) - self._expert_params(unused)

    def flops_per_token(self) -> int:
        """Training FLOPs per token (LlamaConfig's formula over the active parameters; the CPU path computes
        every expert densely, so its achieved FLOPs are num_experts / num_experts_per_tok times higher)."""
        unused = self.num_experts - self.num_experts_per_tok
        return super().flops_per_token() - 6 * self._expert_params(unused)


def moe_ffn(config: MixtralConfig, expert_names) -> MoE:
    """Top-k routed SwiGLU experts whose projections carry the family's HF names."""
    return MoE(config.hidden_size, config.expert_ffn_size, config.num_experts, config.num_experts_per_tok,
               config.norm_topk_prob, expert_names, config.initializer_range,
               DTYPES[config.param_init_type], DTYPES[config.compute_dtype])


def mixtral_layer(config: MixtralConfig, index: int) -> DecoderLayer:
    """One Mixtral block: experts under `block_sparse_moe`, projections named w1 (gate), w3 (up), w2 (down)."""
    return DecoderLayer(rms_norm(config), gqa_attention(config), rms_norm(config),
                        moe_ffn(config, EXPERT_NAMES["mixtral"]), ffn_name="block_sparse_moe")


@MindFormerRegister.register(MindFormerModuleType.MODELS)
class MixtralForCausalLM(MoeForCausalLM):
    """Mixtral with a language-model head (interface: DecoderForCausalLM; training adds the balancing loss)."""

    config_class = MixtralConfig
    build_layer = staticmethod(mixtral_layer)
