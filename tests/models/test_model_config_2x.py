"""The upstream 2.x model_config vocabulary: mapped onto our configs, refused in one line, or logged as a hint."""
import logging
import os

import numpy as np
import pytest
import yaml

from mindformers.config import load_config
from mindformers.models import DeepseekV3Config, Qwen3Config, Qwen3MoeConfig
from mindformers.models.config_2x import TABLE, translate_2x
from mindformers.models.hf import from_pretrained, read_weights_dir
from mindformers.trainer.builders import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QWEN3 = os.path.join(ROOT, "tests", "fixtures", "hf_tiny_qwen3")

# upstream 2.1.0 configs/qwen3/finetune_qwen3.yaml, model.model_config (next to pretrained_model_dir)
FINETUNE_QWEN3 = {
    "qkv_concat": True, "hidden_dropout": 0.0, "input_sliced_sig": True,
    "untie_embeddings_and_output_weights": True, "position_embedding_type": "rope",
    "use_contiguous_weight_layout_attention": False, "offset": 0, "params_dtype": "float32",
    "compute_dtype": "bfloat16", "layernorm_compute_dtype": "float32", "softmax_compute_dtype": "float32",
    "rotary_dtype": "float32", "fp32_residual_connection": True,
}

# Every model_config key of the upstream 2.1.0 YAMLs under configs/{general,qwen2,qwen3,qwen3_moe,deepseek3,glm4}
# (`type` is not a vocabulary key: hf/pretrained.py checks it against config.json).
UPSTREAM_YAML_KEYS = """
add_bias_linear add_qkv_bias apply_query_key_layer_scaling apply_residual_connection_post_layernorm
apply_rope_fusion architectures attention_bias attention_dropout attention_softmax_in_fp32 auto_map batch_size
beta_fast beta_slow bias_dropout_fusion bias_swiglu_fusion block_size bos_token_id checkpoint_name_or_path
compute_dtype do_sample eos_token_id ffn_hidden_size first_k_dense_replace fp32_residual_connection
gated_linear_unit head_dim hidden_act hidden_dropout hidden_size initializer_range input_sliced_sig
intermediate_size is_dynamic kv_channels kv_lora_rank layernorm_compute_dtype layernorm_compute_type
layernorm_epsilon max_decode_length max_length max_position_embeddings mla_qkv_concat mlp_concat model_type
moe_aux_loss_coeff moe_grouped_gemm moe_intermediate_size moe_router_bias_update_rate
moe_router_enable_expert_bias moe_router_fusion moe_router_load_balancing_type moe_router_pre_softmax
moe_shared_expert_intermediate_size moe_token_dispatcher_type moe_token_drop_policy mscale mscale_all_dim
mtp_loss_factor mtp_loss_scaling_factor multi_latent_attention multi_query_attention multi_query_group_num
n_group n_routed_experts n_shared_experts norm_topk_prob num_attention_heads num_blocks num_experts
num_experts_per_tok num_hidden_layers num_key_value_heads num_layers num_nextn_predict_layers offset
pad_token_id padded_vocab_size param_init_type params_dtype position_embedding_type post_layer_norm
pp_interleave_num pre_seq_len prefix_projection q_lora_rank qk_layernorm qk_nope_head_dim qk_rope_head_dim
qkv_concat quantization_bit repetition_penalty rms_norm_eps rmsnorm rope_ratio rope_theta rotary_dtype
routed_scaling_factor router_aux_loss_coef router_dense_type scaling_factor scoring_func seq_length
softmax_compute_dtype tie_word_embeddings top_k top_p topk_group untie_embeddings_and_output_weights
use_attn_mask_compression use_cache use_contiguous_weight_layout_attention use_flash_attention use_fused_mla
use_fused_ops_topkrouter use_pad_tokens use_past v_head_dim vocab_size
""".split()

# Every field of upstream's parallel_core TransformerConfig, MLATransformerConfig and ModelParallelConfig.
UPSTREAM_MCORE_FIELDS = """
activation_func activation_func_clamp_value actual_vocab_size add_bias_linear add_mlp_fc1_bias_linear
add_mlp_fc2_bias_linear add_qkv_bias apply_dsa_kernel_fusion apply_query_key_layer_scaling
apply_residual_connection_post_layernorm apply_rope_fusion attention_dropout attention_softmax_in_fp32
attn_allgather attn_allreduce attn_reduce_scatter batch_size beta_fast beta_slow bias_dropout_fusion
bias_swiglu_fusion block_size calculate_per_token_loss callback_moe_droprate chunk_loss_num coeff
comp_comm_parallel comp_comm_parallel_degree compute_dtype context_parallel_algo context_parallel_size
cp_comm_type cpu_offloading cpu_offloading_num_layers csa_compress_ratios csa_compress_rotary_base
csa_dense_mode csa_window_size data_parallel_size default_prefetch disable_lazy_inline dispatch_global_max_bs
dsa_index_share_loss dsa_index_share_topk_offload dsa_index_skip_topk_offset dsa_index_topk_freq
dsa_indexer_head_dim dsa_indexer_loss_coeff dsa_indexer_n_heads dsa_indexer_topk dsa_indexer_types
dsa_indexer_use_sparse_loss dsa_warmup_layerwise_backward embedding_params_dtype enable_expert_relocation
enable_hc_head enable_hyper_connections experimental_attention_variant expert_model_parallel_size
expert_relocation_freq expert_relocation_initial_iteration expert_tensor_parallel_size ffn_allgather
ffn_allreduce ffn_hidden_size ffn_reduce_scatter first_k_dense_replace fp16_lm_cross_entropy
fp32_residual_connection fused_norm gated_linear_unit gradient_aggregation_group group_wise_a2a hidden_act
hidden_dropout hidden_size hierarchical_context_parallel_sizes ignore_token_id init_method init_method_std
input_layout is_dynamic kv_channels kv_lora_rank layernorm_compute_dtype layernorm_epsilon mask_func_type
max_position_embeddings mhc_init_gating_factor mhc_layernorm_epsilon mhc_sinkhorn_iterations micro_batch_num
mla_qkv_concat model_architecture moe_apply_probs_on_input moe_aux_loss_coeff moe_expert_capacity_factor
moe_ffn_hidden_size moe_grouped_gemm moe_layer_freq moe_n_hash_layers moe_permute_fusion
moe_router_bias_update_rate moe_router_dtype moe_router_enable_expert_bias moe_router_force_expert_balance
moe_router_fusion moe_router_group_topk moe_router_load_balancing_type moe_router_num_groups
moe_router_pre_softmax moe_router_score_function moe_router_topk moe_router_topk_scaling_factor
moe_shared_expert_intermediate_size moe_shared_expert_overlap moe_token_dispatcher_type moe_token_drop_policy
moe_z_loss_coeff mp_comm_recompute mscale mscale_all_dim mtp_loss_scaling_factor mtp_num_layers
multi_latent_attention nope_layer_interval norm_topk_prob normalization npu_nums_per_device
num_attention_heads num_blocks num_decoder_layers num_encoder_layers num_layers num_moe_experts
num_query_groups num_residual_streams o_groups o_lora_rank offset op_swap original_max_position_embeddings
output_layer_init_method pad_token_id parallel_config parallel_optimizer_comm_recompute param_init_std_rules
params_dtype partial_rotary_factor pet_config pipeline_model_parallel_size position_embedding_type
post_process pre_process print_expert_load print_separate_loss q_lora_rank qk_head_dim qk_layernorm
qk_pos_emb_head_dim quantization_config recompute recompute_slice_activation rope_scaling rope_type
rotary_base rotary_cos_format rotary_dtype rotary_interleaved rotary_percent rotary_scaling_factor
rotary_seq_len_interpolation_factor sandwich_norm select_comm_recompute select_comm_recompute_exclude
select_recompute select_recompute_exclude seq_length seq_split_num sequence_parallel shared_expert_num
softmax_compute_dtype softmax_scale sparse_mode tensor_model_parallel_size tie_word_embeddings topk_method
track_max_attention_logit ulysses_degree_in_cp untie_embeddings_and_output_weights use_alibi_mask use_alltoall
use_attention_mask use_attn_mask_compression use_contiguous_weight_layout_attention
use_eod_attn_mask_compression use_eod_reset use_flash_attention use_fused_mhc use_fused_mla
use_fused_ops_topkrouter use_interleaved_weight_layout_mlp use_pad_tokens use_ring_attention use_rope_scaling
use_rotary_position_ids use_shared_expert_gating v_head_dim virtual_pipeline_model_parallel_size vocab_emb_dp
vocab_size window_attn_skip_freq window_size
""".split()


def test_table_covers_every_upstream_key():
    missing = sorted(k for k in set(UPSTREAM_YAML_KEYS) | set(UPSTREAM_MCORE_FIELDS) if k not in TABLE)
    assert not missing
    assert {rule.kind for rule in TABLE.values()} == {"map", "fixed", "hint"}
    assert all(rule.why for rule in TABLE.values() if rule.kind in ("fixed", "hint"))


def test_finetune_qwen3_model_config_builds_fp32_on_cpu_with_one_notice(caplog, monkeypatch):
    from mindformers.tools import logger as log
    monkeypatch.setattr(log, "LOGGED_ONCE", set())  # logged once per process: an earlier test may have logged it
    with caplog.at_level(logging.INFO, logger="mindformers"):
        net = from_pretrained(QWEN3, **FINETUNE_QWEN3)
    config = net.config
    assert type(config) is Qwen3Config and config.num_layers == 2 and config.head_dim == 16
    assert config.compute_dtype == config.param_init_type == config.layernorm_compute_type == "float32"
    assert not config.tie_word_embeddings and config.qkv_concat is False
    assert all(str(p.dtype) == "Float32" for p in net.get_parameters())
    notices = [r.getMessage() for r in caplog.records if "bfloat16" in r.getMessage()]
    assert len(notices) == 1 and "compute_dtype" in notices[0] and "float32" in notices[0]
    hints = [r.getMessage() for r in caplog.records if "has no effect on CPU" in r.getMessage()]
    assert any(h.startswith("model_config.qkv_concat ") for h in hints)
    weights = read_weights_dir(QWEN3)
    for p in net.get_parameters():  # the weights of the directory, unchanged
        np.testing.assert_allclose(p.asnumpy(), weights[p.name].astype(np.float32))


def test_type_less_model_config_with_pretrained_model_dir_in_the_trainer(tmp_path):
    path = tmp_path / "finetune.yaml"
    path.write_text(yaml.safe_dump({"pretrained_model_dir": QWEN3, "model": {"model_config": {
        **FINETUNE_QWEN3, "num_hidden_layers": 2, "seq_length": 32}}}))
    network = build_model(load_config(str(path)))
    assert type(network.config) is Qwen3Config and network.config.num_layers == 2
    assert network.config.seq_length == 32 and network.config.max_position_embedding == 64


def test_mapped_keys_take_our_names():
    out = translate_2x({"params_dtype": "float16", "layernorm_compute_dtype": "float32", "num_attention_heads": 8,
                        "num_query_groups": 2, "ffn_hidden_size": 64, "kv_channels": 32, "add_qkv_bias": True,
                        "qk_layernorm": True, "layernorm_epsilon": 1e-5, "rotary_base": 5e5,
                        "untie_embeddings_and_output_weights": False, "init_method_std": 0.01,
                        "attention_softmax_in_fp32": True, "max_position_embeddings": 128}, Qwen3Config)
    assert out == {"param_init_type": "float16", "layernorm_compute_type": "float32", "num_heads": 8,
                   "n_kv_heads": 2, "intermediate_size": 64, "head_dim": 32, "qkv_has_bias": True, "qk_norm": True,
                   "rms_norm_eps": 1e-5, "theta": 5e5, "tie_word_embeddings": True, "initializer_range": 0.01,
                   "softmax_compute_type": "float32", "max_position_embedding": 128}
    # MoE names go to each family's own key
    assert translate_2x({"num_moe_experts": 4, "moe_router_topk": 2}, Qwen3MoeConfig) == \
        {"num_experts": 4, "num_experts_per_tok": 2}
    assert translate_2x({"num_moe_experts": 4, "moe_router_num_groups": 2}, DeepseekV3Config) == \
        {"n_routed_experts": 4, "n_group": 2}


def test_yarn_position_embedding_becomes_rope_scaling():
    out = translate_2x({"position_embedding_type": "yarn", "scaling_factor": 40, "beta_fast": 32, "mscale": 1,
                        "original_max_position_embeddings": 4096}, DeepseekV3Config)
    assert out["rope_scaling"] == {"rope_type": "yarn", "factor": 40, "beta_fast": 32, "mscale": 1,
                                   "original_max_position_embeddings": 4096}


REFUSED = [
    ({"hidden_dropout": 0.1}, "hidden_dropout=0.1 is not supported: dropout is not implemented"),
    ({"attention_dropout": 0.1}, "attention_dropout=0.1 is not supported: dropout is not implemented"),
    ({"position_embedding_type": "learned_absolute"}, "position_embedding_type='learned_absolute' is not supported"),
    ({"beta_fast": 32}, "beta_fast=32 is not supported: a YaRN parameter"),
    ({"normalization": "LayerNorm"}, "normalization='LayerNorm' is not supported: the decoders use RMSNorm"),
    ({"add_bias_linear": True}, "add_bias_linear=True is not supported"),
    ({"gated_linear_unit": False}, "gated_linear_unit=False is not supported"),
    ({"hidden_act": "gelu"}, "hidden_act='gelu' is not supported"),
    ({"fp32_residual_connection": True, "compute_dtype": "float16"}, "fp32_residual_connection=True is not supp"),
    ({"multi_latent_attention": True}, "multi_latent_attention=True is not supported"),
    ({"num_moe_experts": 8}, "num_moe_experts=8 is not supported: Qwen3Config has no num_experts"),
    ({"moe_aux_loss_coeff": 0.001}, "moe_aux_loss_coeff=0.001 is not supported: Qwen3Config has no "
                                    "router_aux_loss_coef"),
    ({"tensor_model_parallel_size": 2}, "tensor_model_parallel_size=2 is not supported: parallelism is set in "
                                        "parallel_config"),
    ({"model_type": "llama"}, "model_type='llama' is not supported: must name the model of"),
    ({"params_dtype": "fp8"}, "params_dtype must be one of float32, float16, bfloat16"),
    ({"no_such_key": 1}, "model_config.no_such_key is not a key of Qwen3Config nor of the upstream 2.x vocabulary"),
    ({"params_dtype": "float32", "param_init_type": "float16"}, "param_init_type='float16' conflicts with "
                                                                "params_dtype='float32'"),
]


@pytest.mark.parametrize("model_config,message", REFUSED, ids=[next(iter(m)) for m, _ in REFUSED])
def test_refused_keys_give_one_line_errors(model_config, message):
    with pytest.raises(ValueError) as err:
        translate_2x(model_config, Qwen3Config)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_moe_routing_keys_are_checked_against_what_the_family_does():
    # upstream qwen3_moe pretrain: a global-batch aux loss is not the per-micro-batch Switch loss we train with
    with pytest.raises(ValueError, match="^model_config.moe_router_load_balancing_type='gbs_aux_loss' is not supp"):
        translate_2x({"moe_router_load_balancing_type": "gbs_aux_loss", "moe_aux_loss_coeff": 0.001}, Qwen3MoeConfig)
    assert translate_2x({"moe_router_load_balancing_type": "aux_loss", "moe_aux_loss_coeff": 0.001,
                         "moe_router_pre_softmax": True}, Qwen3MoeConfig) == {"router_aux_loss_coef": 0.001}
    # DeepSeek-V3's expert bias moves after each step (TopkBiasBalanceCallback); no other family has the bias
    assert translate_2x({"moe_router_enable_expert_bias": True, "moe_router_bias_update_rate": 0.001},
                        DeepseekV3Config) == {"expert_bias_update_rate": 0.001}
    with pytest.raises(ValueError, match="^model_config.moe_router_bias_update_rate=0.001 is not supported"):
        translate_2x({"moe_router_bias_update_rate": 0.001}, Qwen3MoeConfig)


def test_every_plain_fixed_rule_refuses_other_values():
    for key, rule in TABLE.items():
        if rule.kind != "fixed" or rule.check is not None:
            continue
        with pytest.raises(ValueError, match=f"^model_config.{key}='other' is not supported: "):
            translate_2x({key: "other"}, Qwen3Config)
        translate_2x({key: rule.allowed[0]}, Qwen3Config)  # the value our model has is accepted


def test_refusal_on_the_hf_path_names_the_key():
    with pytest.raises(ValueError, match="^model_config.hidden_dropout=0.2 is not supported"):
        from_pretrained(QWEN3, hidden_dropout=0.2)


def test_hints_are_logged_once(caplog):
    with caplog.at_level(logging.INFO, logger="mindformers"):
        for _ in range(2):
            assert translate_2x({"moe_grouped_gemm": True}, Qwen3MoeConfig) == {}
    assert sum("model_config.moe_grouped_gemm has no effect on CPU" in r.getMessage() for r in caplog.records) == 1
