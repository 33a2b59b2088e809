"""Mixtral (Jiang et al. 2024) and the MoE decoder it shares with Qwen3-MoE: Llama blocks whose feed-forward
is a top-k routed set of SwiGLU experts (mindformers.modules.MoE), trained with a load-balancing loss.

Parameter names are Hugging Face's MixtralForCausalLM ones (`model.layers.N.block_sparse_moe.gate.weight`,
`model.layers.N.block_sparse_moe.experts.E.w1.weight`, ...).
"""
import numbers
from typing import Optional

from mindformers.modules import EXPERT_NAMES, MoE, causal_mask
from mindformers.tools.register import MindFormerModuleType, MindFormerRegister
from mindspore import ops

from ..base import DTYPES, causal_lm_loss
from ..llama import LlamaConfig, LlamaDecoderLayer, LlamaForCausalLM, LlamaModel
from ..llama.llama import _recompute_layer_count, packed_positions_and_mask
from ..llama.llama_config import _bool, _positive_int


@MindFormerRegister.register(MindFormerModuleType.CONFIG)
class MixtralConfig(LlamaConfig):
    """LlamaConfig plus the MoE keys (Hugging Face names); `intermediate_size` is each expert's width unless
    `moe_intermediate_size` is set."""

    def __init__(self, num_experts: int = 8, num_experts_per_tok: int = 2, moe_intermediate_size: Optional[int] = None,
                 norm_topk_prob: bool = True, router_aux_loss_coef: float = 0.02, theta: float = 1000000.0,
                 **kwargs):
        super().__init__(theta=theta, **kwargs)
        _positive_int("num_experts", num_experts)
        _positive_int("num_experts_per_tok", num_experts_per_tok)
        if num_experts_per_tok > num_experts:
            raise ValueError(f"model_config.num_experts_per_tok ({num_experts_per_tok}) must be <= num_experts "
                             f"({num_experts})")
        if moe_intermediate_size is not None:
            _positive_int("moe_intermediate_size", moe_intermediate_size)
        _bool("norm_topk_prob", norm_topk_prob)
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


class MoeDecoderLayer(LlamaDecoderLayer):
    """Llama block with a MoE feed-forward stored under the family's Hugging Face attribute name."""

    ffn_name = "mlp"
    expert_names = EXPERT_NAMES["qwen"]

    def _build_feed_forward(self, config: MixtralConfig):
        moe = MoE(config.hidden_size, config.expert_ffn_size, config.num_experts, config.num_experts_per_tok,
                  config.norm_topk_prob, self.expert_names, config.initializer_range,
                  DTYPES[config.param_init_type], DTYPES[config.compute_dtype])
        setattr(self, self.ffn_name, moe)
        if self.ffn_name != "mlp":
            # The inherited construct calls self.mlp; a plain alias (not a registered child) keeps one name
            # per parameter.
            object.__setattr__(self, "mlp", moe)

    def with_aux_loss(self, x, cos, sin, mask):
        """Training block: (x (B, T, C), this layer's load-balancing loss)."""
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        y, aux = self.mlp.with_aux_loss(self.post_attention_layernorm(x))
        return x + y, aux


class MoeModel(LlamaModel):
    """LlamaModel of MoE blocks; `with_aux_loss` is the training forward that also returns the balancing loss."""

    layer_class = MoeDecoderLayer

    def with_aux_loss(self, input_ids, positions=None, mask=None):
        """(final hidden states (B, T, C), load-balancing loss averaged over layers); `positions` (B, T) and a
        bool `mask` (B, T, T) for packed sequences, as LlamaModel takes them."""
        T = input_ids.shape[1]
        x = ops.cast(self.embed_tokens(input_ids), self.compute_dtype)  # (B, T, C)
        if positions is None:
            cos, sin = self.rotary_emb(T)
            mask = causal_mask(T)
        else:
            cos = ops.gather(self.rotary_emb.cos, positions, 0).expand_dims(1)  # (B, 1, T, hs)
            sin = ops.gather(self.rotary_emb.sin, positions, 0).expand_dims(1)
        aux = 0.0
        for layer in self.layers:
            x, layer_aux = layer.with_aux_loss(x, cos, sin, mask)
            aux = aux + layer_aux
        return self.norm(x), aux / len(self.layers)


class MoeForCausalLM(LlamaForCausalLM):
    """MoE decoder with a language-model head; the training loss adds router_aux_loss_coef x balancing loss."""

    config_class = MixtralConfig
    model_class = MoeModel

    def __init__(self, config):
        super().__init__(config)
        if _recompute_layer_count(self.config.recompute_config, self.config.num_layers):
            # Training runs MoeModel.with_aux_loss, not the layers' construct that recompute() wraps.
            raise ValueError("recompute_config.recompute is not implemented for MoE models; set recompute: False")
        self.aux_loss_coef = float(self.config.router_aux_loss_coef)

    def construct(self, input_ids, labels=None, position_ids=None):
        if not self.training:
            return self.logits(input_ids)
        targets = input_ids[:, 1:] if labels is None else labels[:, 1:]
        if position_ids is None:
            h, aux = self.model.with_aux_loss(input_ids[:, :-1])
        else:
            h, aux = self.model.with_aux_loss(input_ids[:, :-1], *packed_positions_and_mask(position_ids[:, :-1]))
        return causal_lm_loss(self._head(h), targets, self.ignore_index) + self.aux_loss_coef * aux


class MixtralDecoderLayer(MoeDecoderLayer):
    """Mixtral block: experts under `block_sparse_moe`, projections named w1 (gate), w3 (up), w2 (down)."""

    ffn_name = "block_sparse_moe"
    expert_names = EXPERT_NAMES["mixtral"]


class MixtralModel(MoeModel):
    """MoeModel of Mixtral blocks."""

    layer_class = MixtralDecoderLayer


@MindFormerRegister.register(MindFormerModuleType.MODELS)
class MixtralForCausalLM(MoeForCausalLM):
    """Mixtral with a language-model head (same interface as LlamaForCausalLM)."""

    config_class = MixtralConfig
    model_class = MixtralModel
