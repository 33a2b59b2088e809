"""The keys a config may hold: upstream's top-level keys and each section's keys.

A section is a dict of key -> sub-schema (None for a plain value), `FREE` for an open mapping, `Typed`
for a mapping with a `type:` whose other keys must be accepted by the registered class, or `ListOf`.
"""
import difflib
from typing import Any, Dict, List

from ..tools.register import MindFormerModuleType as T
from ..tools.register import MindFormerRegister
from ..tools.register.register import accepted_kwargs
from .loader import ConfigError

FREE = "free"


class Typed:
    """A mapping with `type:` naming a registered component; other keys go to its constructor."""

    def __init__(self, module_type: T, nested: Dict[str, Any] = None, optional_type: bool = False):
        self.module_type, self.nested, self.optional_type = module_type, nested or {}, optional_type


class ListOf:
    """A list whose items all follow one schema (a single mapping is accepted as a list of one)."""

    def __init__(self, item):
        self.item = item


def _keys(*names: str) -> Dict[str, Any]:
    return {n: None for n in " ".join(names).split()}


DATASET = {
    **_keys("input_columns output_columns construct_args_key column_order num_parallel_workers",
            "python_multiprocessing drop_remainder batch_size repeat numa_enable prefetch_size seed",
            "pad_token_id dynamic_batch divisor remainder eod_reset max_length auto_tune filepath_prefix",
            "autotune_per_step profile tokenizer text_transforms"),
    "data_loader": Typed(T.DATASET_LOADER),
}

SCHEMA: Dict[str, Any] = {
    **_keys("seed run_mode output_dir load_checkpoint load_ckpt_format src_strategy_path_or_dir",
            "auto_trans_ckpt only_save_strategy resume_training use_parallel transform_process_num",
            "pretrained_model_dir remove_redundancy train_precision_sync infer_precision_sync use_legacy",
            "load_ckpt_async ignore_data_skip data_skip_steps print_separate_loss remote_save_url device_num",
            "local_rank adapter_id micro_batch_interleave_num do_eval eval_step_interval eval_epoch_interval",
            "merge_lora allow_pickle_checkpoint",
            "auto_tune filepath_prefix autotune_per_step profile profile_start_step profile_stop_step",
            "init_start_profile profile_communication profile_memory profile_rank_ids profile_pipeline",
            "profile_level profile_output profiler_level mstx layer_scale layer_decay lr_scale",
            "lr_scale_factor postprocess_use_numpy predict_batch_size input_data use_checkpoint_health_monitor",
            "resume_by_last_timestamp_ckpt"),
    "trainer": Typed(T.TRAINER),
    "runner_config": _keys("epochs batch_size sink_mode sink_size gradient_accumulation_steps stop_step",
                           "initial_epoch initial_step"),
    "runner_wrapper": Typed(T.WRAPPER),
    "optimizer": Typed(T.OPTIMIZER),
    "lr_schedule": Typed(T.LR),
    "train_dataset": DATASET,
    "eval_dataset": DATASET,
    "train_dataset_task": Typed(T.DATASET, {"dataset_config": DATASET}),
    "eval_dataset_task": Typed(T.DATASET, {"dataset_config": DATASET}),
    "context": {
        **_keys("mode device_target device_id max_call_depth max_device_memory mempool_block_size",
                "save_graphs save_graphs_path enable_graph_kernel graph_kernel_flags memory_optimize_level",
                "runtime_num_threads deterministic pynative_synchronize enable_compile_cache",
                "compile_cache_path op_timeout inter_op_parallel_num precompile_only"),
        "jit_config": FREE, "ascend_config": FREE, "affinity_cpu_list": FREE,
    },
    "parallel": {
        **_keys("parallel_mode gradients_mean enable_alltoall full_batch dataset_strategy search_mode",
                "strategy_ckpt_save_file strategy_ckpt_load_file enable_parallel_optimizer device_num",
                "loss_repeated_mean gradient_fp32_sync auto_pipeline"),
        "strategy_ckpt_config": FREE, "parallel_optimizer_config": FREE, "pipeline_config": FREE,
    },
    "parallel_config": _keys("data_parallel model_parallel context_parallel expert_parallel pipeline_stage",
                             "micro_batch_num use_seq_parallel vocab_emb_dp gradient_aggregation_group",
                             "optimizer_shard context_parallel_algo ulysses_degree_in_cp mem_coeff",
                             "seq_split_num virtual_pipeline_model_parallel_size"),
    "recompute_config": _keys("recompute select_recompute select_comm_recompute mp_comm_recompute",
                              "parallel_optimizer_comm_recompute recompute_slice_activation",
                              "select_recompute_exclude select_comm_recompute_exclude"),
    "moe_config": _keys("expert_num capacity_factor aux_loss_factor num_experts_chosen routing_policy",
                        "enable_sdrop use_fused_ops_topkrouter router_dense_type shared_expert_num",
                        "routed_scaling_factor norm_topk_prob first_k_dense_replace topk_method topk_group",
                        "n_group aux_loss_factors aux_loss_types z_loss_factor balance_via_topk_bias",
                        "topk_bias_update_rate use_gating_sigmoid enable_deredundency npu_nums_per_device",
                        "use_gmm moe_intermediate_size"),
    "swap_config": _keys("swap default_prefetch layer_swap op_swap"),
    "callbacks": ListOf(Typed(T.CALLBACK)),
    "eval_callbacks": ListOf(Typed(T.CALLBACK)),
    "metric": ListOf(Typed(T.METRIC)),
    "model": {
        "model_config": Typed(T.CONFIG, optional_type=True),
        "arch": Typed(T.MODELS),
    },
    # the trainer builds the tokenizer itself; `type`, if given, must name a registered processor
    "processor": Typed(T.PROCESSOR, {"tokenizer": Typed(T.TOKENIZER)}, optional_type=True),
    "generation_config": _keys("max_length max_new_tokens min_new_tokens do_sample temperature top_k top_p",
                               "repetition_penalty num_beams eos_token_id pad_token_id bos_token_id",
                               "use_past stop_strings length_penalty"),
    "monitor_config": _keys("monitor_on dump_path target invert step_interval local_loss_format",
                            "device_local_loss_format local_norm_format device_local_norm_format",
                            "optimizer_state_format weight_state_format throughput_baseline print_struct",
                            "check_for_global_norm global_norm_spike_threshold",
                            "global_norm_spike_count_threshold embedding_size_format spike_factor spike_window"),
    "preference": _keys("loss_type beta gamma label_smoothing"),
    "tensorboard": _keys("tensorboard_dir tensorboard_queue_size log_loss_scale_to_tensorboard",
                         "log_timers_to_tensorboard log_expert_load_to_tensorboard"),
}


def validate_config(cfg) -> None:
    """Check every key of `cfg` against SCHEMA; raise ConfigError listing each problem on its own line."""
    errors: List[str] = []
    _check(cfg, SCHEMA, (), cfg, errors)
    if errors:
        raise ConfigError("\n".join(errors))


def _check(value, schema, path, cfg, errors):
    if schema is None or schema == FREE or value is None:
        return
    if isinstance(schema, ListOf):
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            _check(item, schema.item, path + ((i,) if isinstance(value, list) else ()), cfg, errors)
        return
    if not isinstance(value, dict):
        errors.append(f"{cfg.where(*path)}: '{_dotted(path)}' must be a mapping of keys, got {value!r}")
        return
    if isinstance(schema, Typed):
        _check_typed(value, schema, path, cfg, errors)
        return
    for key, sub in value.items():
        if key not in schema:
            errors.append(_unknown(cfg, path + (key,), schema))
        else:
            _check(sub, schema[key], path + (key,), cfg, errors)


def _check_typed(value, schema: Typed, path, cfg, errors):
    type_name = value.get("type")
    if type_name is None:
        if not schema.optional_type and any(k not in schema.nested for k in value):
            errors.append(f"{cfg.where(*path)}: '{_dotted(path)}' needs a 'type' key naming a registered "
                          f"{schema.module_type.name} (one of: "
                          f"{', '.join(MindFormerRegister.names(schema.module_type))})")
        for key, sub in value.items():
            if key in schema.nested:
                _check(sub, schema.nested[key], path + (key,), cfg, errors)
        return
    try:
        obj = MindFormerRegister.get_cls(schema.module_type, type_name)
    except KeyError as e:
        errors.append(f"{cfg.where(*path, 'type')}: '{_dotted(path + ('type',))}': {e.args[0]}")
        return
    accepted = accepted_kwargs(obj)
    for key, sub in value.items():
        if key == "type":
            continue
        if key in schema.nested:
            _check(sub, schema.nested[key], path + (key,), cfg, errors)
        elif accepted is not None and key not in accepted:
            errors.append(_unknown(cfg, path + (key,), accepted, f" ({type_name} accepts: {', '.join(accepted)})"))


def _unknown(cfg, path, valid, tail="") -> str:
    key = path[-1]
    close = difflib.get_close_matches(str(key), [str(v) for v in valid], n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"{cfg.where(*path)}: unknown key '{_dotted(path)}'{hint}{tail}"


def _dotted(path) -> str:
    return ".".join(str(p) for p in path)
