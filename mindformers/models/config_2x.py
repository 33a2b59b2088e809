"""The upstream 2.x (mcore) `model_config` vocabulary and what each key does to our configs.

Upstream 2.1.0 YAMLs write `model.model_config` in Megatron-core names (params_dtype, hidden_dropout,
untie_embeddings_and_output_weights, ...), usually without `type:` and next to `pretrained_model_dir`.
`TABLE` says, for every such key (those of the shipped YAMLs and every TransformerConfig/MLATransformerConfig
field), one of:
  map   - set our key(s) `target` with the same meaning (first target the config class takes); a class
          with none of them accepts only the `allowed` values (what it does anyway);
  fixed - our models always behave one way: values in `allowed` (or passing `check`) are accepted, others
          are refused with a one-line ValueError naming the key;
  hint  - speed/layout only, the result is the same: logged once as having no effect on the device.
`translate_2x` applies it; the HF path (hf/pretrained.py) calls it for type-less model_configs.
"""
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import mindspore as ms

from mindformers.tools.logger import log_once
from mindformers.tools.register.register import accepted_kwargs

from .base import check_dtype

Check = Callable[[Any, dict, type], bool]  # (value, merged our-vocabulary kwargs + raw model_config, class)


@dataclass(frozen=True)
class Rule:
    """What one 2.x model_config key does to our config."""
    kind: str                                   # "map" | "fixed" | "hint"
    target: Tuple[str, ...] = ()                # map: our key(s)
    allowed: Tuple[Any, ...] = ()               # map without a target / fixed: values we honour as they are
    why: str = ""                               # the refusal reason, or why a hint changes nothing
    convert: Optional[Callable[[str, Any, dict], Any]] = None  # map: (key, value, model_config) -> our value
    check: Optional[Check] = None               # fixed: accepted iff check(...) (instead of `allowed`)


TABLE: Dict[str, Rule] = {}


def _map(target, *sources: str, convert=None, allowed=(), why="", check: Optional[Check] = None):
    """`sources` set our `target`; a family without the target accepts only `allowed` (or what `check` passes)."""
    targets = (target,) if isinstance(target, str) else tuple(target)
    for key in sources or targets[:1]:
        TABLE[key] = Rule("map", targets, tuple(allowed), why, convert, check)


def _same(*keys: str):
    """Keys spelled the same in both vocabularies."""
    for key in " ".join(keys).split():
        _map(key, key)


def _fixed(why: str, check: Optional[Check] = None, **allowed):
    for key, values in allowed.items():
        TABLE[key] = Rule("fixed", allowed=values if isinstance(values, tuple) else (values,), why=why, check=check)


def _hint(why: str, *keys: str):
    for key in " ".join(keys).split():
        TABLE[key] = Rule("hint", why=why)


def _dtype(key, value, mc):
    return check_dtype(key, value)


def _accepts(cls, key: str) -> bool:
    return key in (accepted_kwargs(cls) or ())


def effective_dtype(dtype: str, device: Optional[str] = None) -> str:
    """The dtype a model really runs in: bfloat16 falls back to float32 on CPU (see check_dtypes_on_device)."""
    device = device or ms.get_context("device_target")
    return "float32" if device == "CPU" and dtype == "bfloat16" else dtype


def _compute_is_fp32(merged: dict) -> bool:
    return effective_dtype(merged.get("compute_dtype", "float32")) == "float32"


# ---- acted on: same meaning, our name ----
_same("batch_size seq_length hidden_size vocab_size compute_dtype rotary_dtype bos_token_id eos_token_id",
      "pad_token_id ignore_token_id checkpoint_name_or_path offset is_dynamic block_size num_blocks use_past",
      "max_decode_length top_k top_p do_sample repetition_penalty tie_word_embeddings parallel_config",
      "pet_config rope_scaling extend_method multiple_of ffn_dim_multiplier pp_interleave_num",
      "partial_rotary_factor first_k_dense_replace q_lora_rank kv_lora_rank v_head_dim norm_topk_prob",
      "topk_method rope_interleave")
for _key in ("compute_dtype", "rotary_dtype"):
    _map(_key, _key, convert=_dtype)
_map("param_init_type", "params_dtype", "param_init_type", convert=_dtype)
_map("embedding_init_type", "embedding_params_dtype", convert=_dtype)
_map("layernorm_compute_type", "layernorm_compute_dtype", "layernorm_compute_type", convert=_dtype)
_map("softmax_compute_type", "softmax_compute_dtype", "softmax_compute_type", convert=_dtype)
_map("softmax_compute_type", "attention_softmax_in_fp32",
     convert=lambda key, v, mc: "float32" if v else mc.get("compute_dtype", "float32"))
_map("tie_word_embeddings", "untie_embeddings_and_output_weights", convert=lambda key, v, mc: not v)
_map("num_layers", "num_layers", "num_hidden_layers", "n_layer")
_map("num_heads", "num_heads", "num_attention_heads", "n_head")
_map("n_kv_heads", "n_kv_heads", "num_key_value_heads", "num_query_groups", "multi_query_group_num")
_map("intermediate_size", "intermediate_size", "ffn_hidden_size")
_map("head_dim", "head_dim", "kv_channels", why="this family derives head_dim = hidden_size / num_heads")
_map("qkv_has_bias", "qkv_has_bias", "add_qkv_bias", "attention_bias")
# with MLA (DeepSeek-V3) upstream's qk_layernorm is the RMSNorm of the q and kv latents, which MLA here always has
_map("qk_norm", "qk_layernorm", "use_qk_norm", allowed=(False,), why="this family has no q/k RMSNorm (Qwen3 does)",
     check=lambda v, m, cls: not v or _accepts(cls, "kv_lora_rank"))
_map("rms_norm_eps", "rms_norm_eps", "layernorm_epsilon", "layer_norm_epsilon")
_map("theta", "theta", "rope_theta", "rotary_base")
_map("max_position_embedding", "max_position_embeddings")
_map("initializer_range", "initializer_range", "init_method_std")
_map("vocab_size", "padded_vocab_size")
# MoE: Mixtral/Qwen3-MoE take num_experts, DeepSeek-V3 n_routed_experts
_map(("num_experts", "n_routed_experts"), "num_experts", "num_moe_experts", "n_routed_experts", "expert_num",
     allowed=(None,), why="this family has no experts")
_map("num_experts_per_tok", "num_experts_per_tok", "moe_router_topk", "num_experts_chosen", allowed=(None,),
     why="this family has no experts")
_map("moe_intermediate_size", "moe_intermediate_size", "moe_ffn_hidden_size", allowed=(None,),
     why="this family has no experts")
_map("router_aux_loss_coef", "router_aux_loss_coef", "moe_aux_loss_coeff", allowed=(0, 0.0),
     why="this family trains without an auxiliary load-balancing loss")
_map("n_group", "n_group", "moe_router_num_groups", allowed=(None,), why="group-limited routing is DeepSeek-V3's")
_map("topk_group", "topk_group", "moe_router_group_topk", allowed=(None,), why="group-limited routing is DeepSeek-V3's")
_map("n_shared_experts", "n_shared_experts", "shared_expert_num", allowed=(0, None),
     why="this family has no shared experts")
_map("routed_scaling_factor", "routed_scaling_factor", "moe_router_topk_scaling_factor", allowed=(None, 1, 1.0),
     why="this family does not scale the routing weights")
_map("scoring_func", "scoring_func", "moe_router_score_function", allowed=("softmax",),
     why="this family routes with softmax scores")
_map("scoring_func", "use_gating_sigmoid", convert=lambda key, v, mc: "sigmoid" if v else "softmax",
     allowed=(False,), why="this family routes with softmax scores")
_map("num_nextn_predict_layers", "num_nextn_predict_layers", "mtp_num_layers", "mtp_depth", allowed=(0, None),
     why="multi-token prediction layers exist only in DeepSeek-V3 here")
_map("qk_nope_head_dim", "qk_nope_head_dim", "qk_head_dim", allowed=(), why="only MLA (DeepSeek-V3) has it")
_map("qk_rope_head_dim", "qk_rope_head_dim", "qk_pos_emb_head_dim", allowed=(), why="only MLA (DeepSeek-V3) has it")
_map("rope_interleave", "rotary_interleaved", allowed=(False,),
     why="this family rotates half-split pairs (DeepSeek-V3 takes rope_interleave)")
_map("scaling_factor", "scaling_factor", "rotary_scaling_factor", "factor")

# ---- YaRN details: merged into rope_scaling (see _yarn) ----
YARN_KEYS = {"beta_fast": "beta_fast", "beta_slow": "beta_slow", "mscale": "mscale",
             "mscale_all_dim": "mscale_all_dim", "original_max_position_embeddings": "original_max_position_embeddings"}
for _key in YARN_KEYS:
    TABLE[_key] = Rule("map", ("rope_scaling",), why="a YaRN parameter: needs position_embedding_type: yarn")
TABLE["position_embedding_type"] = Rule("map", ("rope_scaling",), ("rope",),
                                        "only rotary embeddings are implemented: 'rope' or 'yarn'")
TABLE["rope_type"] = TABLE["position_embedding_type"]  # MLATransformerConfig's spelling

# ---- fixed: our decoders always do this ----
_NO_DROPOUT = "dropout is not implemented in the decoder; set 0.0"
_fixed(_NO_DROPOUT, hidden_dropout=(0, 0.0), attention_dropout=(0, 0.0))
_fixed("the decoders use RMSNorm", normalization=("RMSNorm",), rmsnorm=(True,))
_fixed("the MLP is a gated linear unit (SwiGLU); set True", gated_linear_unit=(True,))
_fixed("the MLP activation is SiLU (SwiGLU)", hidden_act=("silu", "swiglu"), activation_func=("silu", "swiglu"))
_fixed("the dense/MLP projections have no bias (only q/k/v may: add_qkv_bias)", add_bias_linear=(False,),
       add_mlp_fc1_bias_linear=(False, None), add_mlp_fc2_bias_linear=(False, None))
_fixed("the decoders are pre-norm with a final norm", apply_residual_connection_post_layernorm=(False,),
       post_layer_norm=(True,), sandwich_norm=(False,), model_architecture=("decoder_only",),
       num_encoder_layers=(None,), num_decoder_layers=(None,))
_fixed("attention scores are scaled by 1/sqrt(head_dim)", softmax_scale=(None,))
_fixed("the residual stream is kept in compute_dtype: set False or compute_dtype: float32",
       check=lambda v, m, cls: not v or _compute_is_fp32(m), fp32_residual_connection=())
_fixed("the router matmul runs in compute_dtype (DeepSeek-V3's in float32): set compute_dtype: float32",
       check=lambda v, m, cls: v == "float32" and (_compute_is_fp32(m) or _accepts(cls, "n_routed_experts"))
       or v == effective_dtype(m.get("compute_dtype", "float32")), router_dense_type=(), moe_router_dtype=())
_fixed("multi-query attention comes with multi_query_group_num (our n_kv_heads)",
       check=lambda v, m, cls: bool(v) == ("multi_query_group_num" in m), multi_query_attention=())
_fixed("MLA is DeepSeek-V3's attention (and DeepSeek-V3 always uses it)",
       check=lambda v, m, cls: bool(v) == _accepts(cls, "kv_lora_rank"), multi_latent_attention=())
_fixed("the expert-score bias exists only in DeepSeek-V3 (e_score_correction_bias, always on)",
       check=lambda v, m, cls: bool(v) == _accepts(cls, "n_routed_experts"),
       moe_router_enable_expert_bias=(), balance_via_topk_bias=())
# the bias moves after each step (TopkBiasBalanceCallback); only DeepSeek-V3 has the bias
_map("expert_bias_update_rate", "moe_router_bias_update_rate", "topk_bias_update_rate", allowed=(0, 0.0),
     why="only DeepSeek-V3's router has an expert-score bias to update")
_fixed("the load-balancing loss is the Switch loss over the micro-batch ('aux_loss'); DeepSeek-V3 has none "
       "(set moe_aux_loss_coeff: 0)",
       check=lambda v, m, cls: v == "none" or (v == "aux_loss" and _accepts(cls, "router_aux_loss_coef"))
       or m.get("router_aux_loss_coef", 0) == 0, moe_router_load_balancing_type=())
_fixed("softmax routing here takes top-k of the softmax over all experts (pre-softmax); False matches only "
       "with norm_topk_prob: True", check=lambda v, m, cls: v or m.get("norm_topk_prob", True),
       moe_router_pre_softmax=())
_fixed("the shared-expert MLP is n_shared_experts * moe_intermediate_size wide here",
       check=lambda v, m, cls: v is None or v == m.get("n_shared_experts", 0) * (m.get("moe_intermediate_size") or 0),
       moe_shared_expert_intermediate_size=())
_fixed("multi-token prediction training is not implemented; set num_nextn_predict_layers: 0",
       check=lambda v, m, cls: v is None or not m.get("num_nextn_predict_layers"),
       mtp_loss_scaling_factor=(), mtp_loss_factor=())
_fixed("MoE here is dropless: no capacity factor", moe_expert_capacity_factor=(None,), capacity_factor=(None,))
_fixed("every layer of an MoE family is MoE (DeepSeek-V3: after first_k_dense_replace)", moe_layer_freq=(1,))
_fixed("not implemented", moe_z_loss_coeff=(None, 0, 0.0), z_loss_factor=(None, 0, 0.0),
       moe_apply_probs_on_input=(False,), use_shared_expert_gating=(False,), moe_router_force_expert_balance=(False,),
       moe_n_hash_layers=(0,), enable_expert_relocation=(False,), activation_func_clamp_value=(None,),
       nope_layer_interval=(None,), window_size=(None,), window_attn_skip_freq=(None,),
       experimental_attention_variant=(None,), enable_hyper_connections=(False,), enable_hc_head=(None, False),
       use_alibi_mask=(False,), use_ring_attention=(False,), quantization_config=(None,), quantization_bit=(0,),
       pre_seq_len=(None, "None", 0), prefix_projection=(False,), calculate_per_token_loss=(False,),
       fp16_lm_cross_entropy=(False,), chunk_loss_num=(0,), use_rope_scaling=(False,),
       rotary_seq_len_interpolation_factor=(None,), rotary_percent=(1, 1.0), actual_vocab_size=(None,),
       param_init_std_rules=(None,), init_method=(None,), output_layer_init_method=(None,), coeff=(0.1,),
       use_eod_reset=(False,), use_rotary_position_ids=(False,), pre_process=(True,), post_process=(True,))
_fixed("set theta (rope_theta) instead", rope_ratio=(1, 1.0))
_fixed("set generation_config.max_length instead", max_length=(None,))
_fixed("DeepSeek-V4 / DSA attention is not implemented",
       dsa_indexer_n_heads=(None,), dsa_indexer_head_dim=(None,), dsa_indexer_topk=(None,), dsa_index_topk_freq=(1,),
       dsa_index_share_topk_offload=(False,), dsa_index_share_loss=("served",), dsa_index_skip_topk_offset=(0,),
       dsa_indexer_types=(None,), dsa_warmup_layerwise_backward=(False,), dsa_indexer_loss_coeff=(None,),
       dsa_indexer_use_sparse_loss=(False,), apply_dsa_kernel_fusion=(True,), csa_window_size=(128,),
       csa_compress_ratios=(None,), csa_compress_rotary_base=(40000.0,), csa_dense_mode=(False,), o_groups=(8,),
       o_lora_rank=(1024,), num_residual_streams=(4,), mhc_sinkhorn_iterations=(20,),
       mhc_init_gating_factor=(0.01,), mhc_layernorm_epsilon=(1e-6,), use_fused_mhc=(False,))
_fixed("parallelism is set in parallel_config, not model_config",
       data_parallel_size=(1,), tensor_model_parallel_size=(1,), pipeline_model_parallel_size=(1,),
       virtual_pipeline_model_parallel_size=(None, 1), sequence_parallel=(False,), context_parallel_size=(1,),
       hierarchical_context_parallel_sizes=(1,), expert_model_parallel_size=(1,), expert_tensor_parallel_size=(None, 1),
       micro_batch_num=(1,), seq_split_num=(1,), vocab_emb_dp=(False,), context_parallel_algo=("colossalai_cp",),
       ulysses_degree_in_cp=(1,), cp_comm_type=(None,))
_fixed("recomputation is set in recompute_config, not model_config",
       recompute=(False,), select_recompute=(False,), parallel_optimizer_comm_recompute=(False,),
       select_comm_recompute=(False,), mp_comm_recompute=(True,), recompute_slice_activation=(False,),
       select_recompute_exclude=(False,), select_comm_recompute_exclude=(False,))
_fixed("activation/weight swapping to host memory is not implemented", cpu_offloading=(False,),
       cpu_offloading_num_layers=(None,), op_swap=(None,), default_prefetch=(1,))


def _same_arch(key: str):
    def check(value, merged, cls):
        from .hf.families import HF_FAMILIES  # late: hf imports the model families
        names = [value] if isinstance(value, str) else list(value or [])
        for fam in HF_FAMILIES.values():
            if fam.config_class is cls:
                return all(n in ((fam.model_type,) if key == "model_type" else fam.architectures) for n in names)
        return False
    return check


_fixed("must name the model of pretrained_model_dir/config.json", check=_same_arch("model_type"), model_type=())
_fixed("must name the model of pretrained_model_dir/config.json", check=_same_arch("architectures"),
       architectures=())

# ---- hints: the same function computed faster or laid out differently ----
_hint("q/k/v stay separate projections, as in Hugging Face checkpoints; a fused qkv matmul computes the "
      "same outputs", "qkv_concat mla_qkv_concat use_contiguous_weight_layout_attention")
_hint("gate/up stay as the family's checkpoint stores them; fusing them computes the same outputs",
      "mlp_concat use_interleaved_weight_layout_mlp")
_hint("FlashAttention is an exact reformulation of softmax attention: the plain kernel gives the same "
      "result", "use_flash_attention input_layout sparse_mode use_attn_mask_compression",
      "use_eod_attn_mask_compression use_attention_mask mask_func_type")
_hint("fused kernels compute the same function", "bias_dropout_fusion apply_rope_fusion use_fused_rope",
      "bias_swiglu_fusion use_fused_swiglu moe_router_fusion use_fused_ops_topkrouter use_fused_mla fused_norm",
      "moe_permute_fusion use_fused_ops_permute rotary_cos_format")
_hint("grouped expert matmuls and token padding/dispatch change speed, not the dropless MoE result",
      "moe_grouped_gemm use_gmm use_pad_tokens enable_gmm_safe_tokens moe_token_dispatcher_type",
      "moe_token_drop_policy enable_sdrop group_wise_a2a moe_shared_expert_overlap npu_nums_per_device",
      "dispatch_global_max_bs use_alltoall")
_hint("communication/compile scheduling only", "comp_comm_parallel comp_comm_parallel_degree attn_reduce_scatter",
      "attn_allgather attn_allreduce ffn_reduce_scatter ffn_allgather ffn_allreduce disable_lazy_inline",
      "gradient_aggregation_group")
_hint("our data loaders always hand the model seq_length + 1 tokens and the model shifts them itself",
      "input_sliced_sig")
_hint("Megatron's 1/layer query-key scaling is undone before the softmax: same scores", "apply_query_key_layer_scaling")
_hint("the KV cache of generation follows use_past", "use_cache")
_hint("the tokenizer comes from processor / pretrained_model_dir", "auto_map")
_hint("monitoring output that is not produced here", "print_separate_loss print_expert_load callback_moe_droprate",
      "track_max_attention_logit expert_relocation_initial_iteration expert_relocation_freq")


def _hint_once(key: str, why: str, device: str):
    log_once(("model_config 2.x", key, device), "model_config.%s has no effect on %s: %s", key, device, why)


def _refuse(key, value, why):
    raise ValueError(f"model_config.{key}={value!r} is not supported: {why}")


def translate_2x(model_config: dict, config_class: type, base: Optional[dict] = None) -> dict:
    """`model_config` (2.x or our vocabulary) as kwargs of `config_class`, over `base` (e.g. from config.json).

    Keys the class takes pass through; 2.x keys follow TABLE; anything else is a ValueError naming the key.
    """
    device = ms.get_context("device_target")
    base = dict(base or {})
    out: Dict[str, Any] = {}
    origin: Dict[str, str] = {}
    fixed, yarn = [], {}
    for key, value in model_config.items():
        rule = TABLE.get(key)
        if rule is None or (rule.kind == "map" and _accepts(config_class, key) and key not in rule.target):
            if not _accepts(config_class, key):
                raise ValueError(f"model_config.{key} is not a key of {config_class.__name__} nor of the upstream "
                                 f"2.x vocabulary (see mindformers/models/config_2x.py)")
            rule = Rule("map", (key,))
        if rule.kind == "hint":
            _hint_once(key, rule.why, device)
        elif rule.kind == "fixed":
            fixed.append((key, value, rule))
        elif rule.target == ("rope_scaling",) and key != "rope_scaling":
            yarn[key] = value
        else:
            target = next((t for t in rule.target if _accepts(config_class, t)), None)
            if target is None:
                if not (rule.check(value, model_config, config_class) if rule.check else value in rule.allowed):
                    _refuse(key, value, f"{config_class.__name__} has no {rule.target[0]} ({rule.why})")
                continue
            new = rule.convert(key, value, model_config) if rule.convert else value
            if target in out and out[target] != new:
                first = origin[target]
                raise ValueError(f"model_config.{key}={value!r} conflicts with {first}={model_config[first]!r} "
                                 f"(both set {target}); keep one")
            out[target], origin[target] = new, key
    merged = {**base, **out}
    _apply_rope(model_config, yarn, merged, out)
    seen = {**model_config, **merged}
    for key, value, rule in fixed:
        ok = rule.check(value, seen, config_class) if rule.check else value in rule.allowed
        if not ok:
            _refuse(key, value, rule.why)
    return out


def _apply_rope(model_config: dict, yarn: dict, merged: dict, out: dict):
    """position_embedding_type (rope | yarn) and the YaRN keys onto rope_scaling/scaling_factor."""
    kind = yarn.pop("position_embedding_type", yarn.pop("rope_type", None))
    if kind not in (None, "rope", "yarn"):
        _refuse("position_embedding_type", kind, TABLE["position_embedding_type"].why)
    scaling = dict(merged.get("rope_scaling") or {})
    current = scaling.get("rope_type", scaling.get("type", merged.get("extend_method", "None")))
    if kind == "rope" and yarn:
        _refuse(next(iter(yarn)), yarn[next(iter(yarn))], "a YaRN parameter with position_embedding_type: rope")
    if kind == "yarn" or (kind is None and yarn):
        if kind is None and current != "yarn":
            key = next(iter(yarn))
            _refuse(key, yarn[key], TABLE[key].why)
        # with yarn, a numeric scaling_factor (upstream: rotary_scaling_factor) is YaRN's factor
        factor = out.pop("scaling_factor", None) if kind == "yarn" else None
        scaling = {**(scaling if current == "yarn" else {}), "rope_type": "yarn",
                   **({"factor": factor} if isinstance(factor, (int, float)) else {}),
                   **{YARN_KEYS[k]: v for k, v in yarn.items()}}
        if "factor" not in scaling:
            _refuse("position_embedding_type", kind, "yarn needs a factor (scaling_factor, or rope_scaling in "
                                                     "config.json)")
        out["rope_scaling"] = merged["rope_scaling"] = scaling
        out["extend_method"], out["scaling_factor"] = "None", 1.0  # rope_scaling carries them
