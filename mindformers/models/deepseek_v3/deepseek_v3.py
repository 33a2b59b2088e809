"""DeepSeek-V3 (DeepSeek-AI 2024): Multi-head Latent Attention, and MoE feed-forwards with shared experts and
a sigmoid router that picks experts within the best groups, balanced by a per-expert bias instead of a loss.

The first `first_k_dense_replace` layers have a dense SwiGLU; the others a DeepseekMoE. Parameter names are
Hugging Face's DeepseekV3ForCausalLM ones (`model.layers.N.self_attn.kv_a_proj_with_mqa.weight`,
`model.layers.N.mlp.gate.e_score_correction_bias`, `model.layers.N.mlp.experts.E.gate_proj.weight`,
`model.layers.N.mlp.shared_experts.up_proj.weight`, ...), so HF directories load without conversion.
"""
import math
from typing import Optional

import mindspore as ms
from mindspore import Parameter, nn, ops
from mindspore.common.initializer import Normal, initializer

from mindformers.modules import EXPERT_NAMES, Expert, SwiGLU
from mindformers.modules.moe import EXPERT_LOAD, mix_experts
from mindformers.tools.register import MindFormerModuleType, MindFormerRegister

from ..base import DTYPES, boolean, non_negative_int, positive_int, positive_number
from ..decoder import DecoderForCausalLM, DecoderLayer, decoder_from_layers, linear_factory, rms_norm, \
    rotary_embedding, swiglu
from ..llama import LlamaConfig
from .mla import MultiLatentAttention

# Hugging Face keeps these two norms at its RMSNorm default eps whatever config.rms_norm_eps says.
_LATENT_NORM_EPS = 1e-6
# Routing methods of DeepSeek's config.json that this implementation computes (and HF's DeepseekV3 does).
TOPK_METHODS = ("noaux_tc",)
SCORING_FUNCS = ("sigmoid",)


@MindFormerRegister.register(MindFormerModuleType.CONFIG)
class DeepseekV3Config(LlamaConfig):
    """LlamaConfig plus DeepSeek-V3's MLA and MoE keys (Hugging Face names, defaults of the 671B model).

    `intermediate_size` is the dense layers' SwiGLU width; `moe_intermediate_size` each routed expert's, and
    the shared expert MLP is `n_shared_experts` times that. `q_lora_rank` None or 0 (DeepSeek's own spelling)
    uses a plain q_proj instead of q_a_proj -> q_a_layernorm -> q_b_proj.
    """

    def __init__(self, q_lora_rank: Optional[int] = 1536, kv_lora_rank: int = 512, qk_nope_head_dim: int = 128,
                 qk_rope_head_dim: int = 64, v_head_dim: int = 128, rope_interleave: bool = True,
                 moe_intermediate_size: int = 2048, n_routed_experts: int = 256, n_shared_experts: int = 1,
                 num_experts_per_tok: int = 8, n_group: int = 8, topk_group: int = 4,
                 first_k_dense_replace: int = 3, norm_topk_prob: bool = True, routed_scaling_factor: float = 2.5,
                 topk_method: str = "noaux_tc", scoring_func: str = "sigmoid", num_nextn_predict_layers: int = 0,
                 expert_bias_update_rate: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if q_lora_rank is not None:
            non_negative_int("q_lora_rank", q_lora_rank)
        for key, value in (("kv_lora_rank", kv_lora_rank), ("qk_nope_head_dim", qk_nope_head_dim),
                           ("qk_rope_head_dim", qk_rope_head_dim), ("v_head_dim", v_head_dim),
                           ("moe_intermediate_size", moe_intermediate_size), ("n_routed_experts", n_routed_experts),
                           ("n_shared_experts", n_shared_experts), ("num_experts_per_tok", num_experts_per_tok),
                           ("n_group", n_group), ("topk_group", topk_group)):
            positive_int(key, value)
        non_negative_int("first_k_dense_replace", first_k_dense_replace)
        non_negative_int("num_nextn_predict_layers", num_nextn_predict_layers)
        boolean("rope_interleave", rope_interleave)
        boolean("norm_topk_prob", norm_topk_prob)
        positive_number("routed_scaling_factor", routed_scaling_factor)
        if isinstance(expert_bias_update_rate, bool) or not isinstance(expert_bias_update_rate, (int, float)) \
                or expert_bias_update_rate < 0:
            raise ValueError(f"model_config.expert_bias_update_rate must be a number >= 0, got "
                             f"{expert_bias_update_rate!r}")
        if qk_rope_head_dim % 2:
            raise ValueError(f"model_config.qk_rope_head_dim must be even (RoPE rotates pairs), got {qk_rope_head_dim}")
        if self.n_kv_heads != self.num_heads:
            raise ValueError(f"model_config.n_kv_heads ({self.n_kv_heads}) must equal num_heads ({self.num_heads}): "
                             f"MLA expands its latent into every head; remove n_kv_heads")
        if topk_method not in TOPK_METHODS:
            raise ValueError(f"model_config.topk_method {topk_method!r} is not supported; valid: {TOPK_METHODS} "
                             f"(sigmoid scores, e_score_correction_bias for selection, group-limited top-k)")
        if scoring_func not in SCORING_FUNCS:
            raise ValueError(f"model_config.scoring_func {scoring_func!r} is not supported; valid: {SCORING_FUNCS}")
        if n_routed_experts % n_group or n_routed_experts // n_group < 2:
            raise ValueError(f"model_config.n_routed_experts ({n_routed_experts}) must split into n_group ({n_group}) "
                             f"equal groups of at least 2 experts (a group scores by its top-2 experts)")
        if topk_group > n_group:
            raise ValueError(f"model_config.topk_group ({topk_group}) must be <= n_group ({n_group})")
        if num_experts_per_tok > topk_group * (n_routed_experts // n_group):
            raise ValueError(f"model_config.num_experts_per_tok ({num_experts_per_tok}) must be <= the experts in "
                             f"topk_group={topk_group} groups ({topk_group * (n_routed_experts // n_group)})")
        if first_k_dense_replace > self.num_layers:
            raise ValueError(f"model_config.first_k_dense_replace ({first_k_dense_replace}) must be <= num_layers "
                             f"({self.num_layers})")
        self.q_lora_rank = q_lora_rank
        self.kv_lora_rank = kv_lora_rank
        self.qk_nope_head_dim = qk_nope_head_dim
        self.qk_rope_head_dim = qk_rope_head_dim
        self.v_head_dim = v_head_dim
        self.rope_interleave = rope_interleave
        self.moe_intermediate_size = moe_intermediate_size
        self.n_routed_experts = n_routed_experts
        self.n_shared_experts = n_shared_experts
        self.num_experts_per_tok = num_experts_per_tok
        self.n_group = n_group
        self.topk_group = topk_group
        self.first_k_dense_replace = first_k_dense_replace
        self.norm_topk_prob = norm_topk_prob
        self.routed_scaling_factor = routed_scaling_factor
        self.topk_method = topk_method
        self.scoring_func = scoring_func
        self.num_nextn_predict_layers = num_nextn_predict_layers
        # DeepSeek's auxiliary-loss-free balancing: after each step e_score_correction_bias moves by this much
        # towards balanced expert loads (core/callback/balance.py); 0 keeps the bias as loaded
        self.expert_bias_update_rate = float(expert_bias_update_rate)

    @property
    def qk_head_dim(self) -> int:
        """Width of one query/key head: the non-rotary plus the rotary part."""
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def softmax_scale(self) -> float:
        """1/sqrt(qk_head_dim), times YaRN's mscale(factor, mscale_all_dim)^2 when the rope scaling sets it."""
        scale = self.qk_head_dim ** -0.5
        params = self.scaling_factor if isinstance(self.scaling_factor, dict) else {}
        factor, mscale_all_dim = params.get("factor", 1.0), params.get("mscale_all_dim")
        if self.extend_method != "None" and mscale_all_dim and factor > 1:
            scale *= (0.1 * mscale_all_dim * math.log(factor) + 1.0) ** 2
        return scale

    def _attention_params(self) -> int:
        c, nh = self.hidden_size, self.num_heads
        if not self.q_lora_rank:
            q = c * nh * self.qk_head_dim
        else:
            q = c * self.q_lora_rank + self.q_lora_rank + self.q_lora_rank * nh * self.qk_head_dim
        kv = c * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank \
            + self.kv_lora_rank * nh * (self.qk_nope_head_dim + self.v_head_dim)
        bias = (self.q_lora_rank or 0) + self.kv_lora_rank + self.qk_rope_head_dim + c if self.qkv_has_bias else 0
        return q + kv + nh * self.v_head_dim * c + bias

    def _expert_params(self, num_experts: int) -> int:
        return num_experts * 3 * self.hidden_size * self.moe_intermediate_size

    @property
    def num_moe_layers(self) -> int:
        """Layers with a MoE feed-forward (the rest are dense)."""
        return self.num_layers - self.first_k_dense_replace

    def num_params(self, exclude_embeddings: bool = False) -> int:
        """Parameter count of DeepseekV3ForCausalLM (the multi-token-prediction layers are not built)."""
        c, v, e = self.hidden_size, self.vocab_size, self.n_routed_experts
        dense_ffn = 3 * c * self.ffn_hidden_size
        moe_ffn = e * c + e + self._expert_params(e + self.n_shared_experts)  # router, bias, routed + shared
        layers = self.num_layers * (self._attention_params() + 2 * c) + self.first_k_dense_replace * dense_ffn \
            + self.num_moe_layers * moe_ffn
        embedding = 0 if exclude_embeddings else v * c
        return embedding + layers + c + (0 if self.tie_word_embeddings else v * c)

    def num_active_params(self, exclude_embeddings: bool = False) -> int:
        """Parameters one token passes through: num_experts_per_tok routed experts per MoE layer."""
        unused = self.n_routed_experts - self.num_experts_per_tok
        return self.num_params(exclude_embeddings) - self.num_moe_layers * self._expert_params(unused)

    def flops_per_token(self) -> int:
        """Training FLOPs per token: 6 x active matmul parameters + attention (q.k over qk_head_dim and the
        weighted sum over v_head_dim; LlamaConfig's 12 L H Q T when both widths are Q)."""
        n_matmul = self.num_active_params(exclude_embeddings=True)
        if self.tie_word_embeddings:
            n_matmul += self.vocab_size * self.hidden_size
        attention = 6 * self.num_layers * self.num_heads * (self.qk_head_dim + self.v_head_dim) * self.seq_length
        return 6 * n_matmul + attention


class GroupLimitedRouter(nn.Cell):
    """DeepSeek-V3's "noaux_tc" router: (N, C) tokens -> (N, E) mixing weights, zero off each token's top k.

    Scores are sigmoid(gate logits) in fp32. Selection adds `e_score_correction_bias` (the load-balancing
    bias, a non-trainable parameter here as in HF's forward), keeps the topk_group groups whose two best
    experts score highest, and takes the top k experts inside them; the weights are the unbiased scores of
    those experts, renormalized if norm_topk_prob, times routed_scaling_factor.
    """

    def __init__(self, config: DeepseekV3Config):
        super().__init__()
        c, e = config.hidden_size, config.n_routed_experts
        self.num_experts, self.top_k = e, config.num_experts_per_tok
        self.n_group, self.topk_group = config.n_group, config.topk_group
        self.norm_topk_prob = config.norm_topk_prob
        self.routed_scaling_factor = float(config.routed_scaling_factor)
        self.weight = Parameter(initializer(Normal(config.initializer_range), (e, c), DTYPES[config.param_init_type]),
                                name="weight")
        self.e_score_correction_bias = Parameter(initializer("zeros", (e,), ms.float32),
                                                 name="e_score_correction_bias", requires_grad=False)
        self.matmul = ops.MatMul(transpose_b=True)
        # with a bias update rate, training steps add each expert's share of the routed tokens here (step state
        # read and reset by TopkBiasBalanceCallback, not a weight: see modules.moe.is_step_state)
        self.bias_update_rate = config.expert_bias_update_rate
        if self.bias_update_rate > 0:
            self.expert_load = Parameter(initializer("zeros", (e,), ms.float32), name=EXPERT_LOAD,
                                         requires_grad=False)

    def construct(self, x):
        scores = ops.sigmoid(self.matmul(ops.cast(x, ms.float32), ops.cast(self.weight, ms.float32)))  # (N, E)
        choice = scores + self.e_score_correction_bias
        N, G = choice.shape[0], self.n_group
        if G > 1:
            per_group = self.num_experts // G
            group_scores = ops.topk(choice.reshape(N * G, per_group), 2)[0].sum(-1).reshape(N, G)
            best_groups = ops.topk(group_scores, self.topk_group)[1]  # (N, topk_group)
            keep = ops.one_hot(best_groups, G, ops.ones((), ms.float32), ops.zeros((), ms.float32)).sum(1)  # (N, G)
            keep = ops.broadcast_to(keep.expand_dims(-1), (N, G, per_group)).reshape(N, -1)  # (N, E)
            # Experts outside the kept groups drop below every kept one (HF fills -inf; same picks, no inf math).
            choice = choice + (keep - 1.0) * 1e30
        picks = ops.topk(choice, self.top_k)[1]  # (N, k)
        weights = ops.gather_elements(scores, 1, picks)  # (N, k): the unbiased scores
        if self.norm_topk_prob:
            weights = weights / (weights.sum(-1, keepdims=True) + 1e-20)
        weights = weights * self.routed_scaling_factor
        chosen = ops.one_hot(picks, self.num_experts, ops.ones((), ms.float32), ops.zeros((), ms.float32))
        if self.training and self.bias_update_rate > 0:
            ops.assign_add(self.expert_load, ops.stop_gradient(chosen.sum(1).mean(0) / self.top_k))
        return (chosen * weights.expand_dims(-1)).sum(1)  # (N, E)


class DeepseekMoE(nn.Cell):
    """Routed SwiGLU experts mixed by GroupLimitedRouter, plus an always-on shared SwiGLU: (B, T, C) -> (B, T, C).

    As in mindformers.modules.MoE, every expert runs on every token (one batched matmul per projection, static
    shapes) and the router's weights, zero off the top k, mix the results.
    """

    def __init__(self, config: DeepseekV3Config):
        super().__init__()
        c, f = config.hidden_size, config.moe_intermediate_size
        param, compute = DTYPES[config.param_init_type], DTYPES[config.compute_dtype]
        linear = linear_factory(config)
        self.hidden_size = c
        self.compute_dtype = compute
        self.gate = GroupLimitedRouter(config)
        self.experts = nn.CellList([Expert(c, f, EXPERT_NAMES["qwen"], config.initializer_range, param, compute)
                                    for _ in range(config.n_routed_experts)])
        shared = f * config.n_shared_experts
        self.shared_experts = SwiGLU(linear(c, shared), linear(c, shared), linear(shared, c))
        self.bmm = ops.BatchMatMul(transpose_b=True)

    def construct(self, x):
        lead = x.shape[:-1]
        flat = ops.cast(x, self.compute_dtype).reshape(-1, self.hidden_size)  # (N, C)
        combine = self.gate(flat)  # (N, E)
        y = mix_experts(flat, combine, self.experts, self.bmm, self.compute_dtype)  # (N, C)
        return y.reshape(lead + (self.hidden_size,)) + self.shared_experts(x)


def mla_attention(config: DeepseekV3Config) -> MultiLatentAttention:
    c, nh = config.hidden_size, config.num_heads
    linear, bias = linear_factory(config), config.qkv_has_bias
    q_out = nh * config.qk_head_dim
    low_rank_q = bool(config.q_lora_rank)
    return MultiLatentAttention(
        nh, config.qk_nope_head_dim, config.qk_rope_head_dim, config.v_head_dim, config.kv_lora_rank,
        config.softmax_scale,
        q_proj=None if low_rank_q else linear(c, q_out),
        q_a_proj=linear(c, config.q_lora_rank, bias) if low_rank_q else None,
        q_a_layernorm=rms_norm(config, config.q_lora_rank, _LATENT_NORM_EPS) if low_rank_q else None,
        q_b_proj=linear(config.q_lora_rank, q_out) if low_rank_q else None,
        kv_a_proj_with_mqa=linear(c, config.kv_lora_rank + config.qk_rope_head_dim, bias),
        kv_a_layernorm=rms_norm(config, config.kv_lora_rank, _LATENT_NORM_EPS),
        kv_b_proj=linear(config.kv_lora_rank, nh * (config.qk_nope_head_dim + config.v_head_dim)),
        o_proj=linear(nh * config.v_head_dim, c, bias),
        rope_interleave=config.rope_interleave, softmax_dtype=DTYPES[config.softmax_compute_type])


def deepseek_v3_layer(config: DeepseekV3Config, index: int) -> DecoderLayer:
    """One DeepSeek-V3 block: MLA attention, and a dense SwiGLU below first_k_dense_replace, else a DeepseekMoE."""
    return DecoderLayer(rms_norm(config), mla_attention(config), rms_norm(config),
                        swiglu(config) if index < config.first_k_dense_replace else DeepseekMoE(config))


def deepseek_v3_decoder(config: DeepseekV3Config):
    """Embedding, num_layers DeepSeek-V3 blocks, final RMSNorm, RoPE over qk_rope_head_dim."""
    return decoder_from_layers(config, deepseek_v3_layer, rotary_embedding(config, config.qk_rope_head_dim))


@MindFormerRegister.register(MindFormerModuleType.MODELS)
class DeepseekV3ForCausalLM(DecoderForCausalLM):
    """DeepSeek-V3 with a language-model head (interface: DecoderForCausalLM).

    Training returns the plain causal-LM loss: like HF's forward there is no auxiliary balancing loss (the
    e_score_correction_bias update DeepSeek trains with is not implemented; the bias stays as loaded).
    """

    config_class = DeepseekV3Config
    build_decoder = staticmethod(deepseek_v3_decoder)

    def init_kv_caches(self, batch_size: int, cache_len: int) -> tuple:
        """Zeroed latent cache per layer: (normed latent (B, 1, S, kv_lora_rank), rotated key (B, 1, S, rope))."""
        c = self.config
        dtype = DTYPES[c.compute_dtype]
        return tuple((ops.zeros((batch_size, 1, cache_len, c.kv_lora_rank), dtype),
                      ops.zeros((batch_size, 1, cache_len, c.qk_rope_head_dim), dtype)) for _ in range(c.num_layers))
