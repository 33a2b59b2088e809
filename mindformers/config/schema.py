"""The keys a config may hold: upstream's top-level keys and each section's keys.

A section is a dict of key -> sub-schema: None for a plain value the code reads, `Refused` for a key accepted
only at an inert value, `NoEffect` for a speed hint logged once, `FREE` for an open mapping, `Typed` for a
mapping with a `type:` whose other keys must be accepted by the registered class, or `ListOf`.
"""
import difflib
from typing import Any, Dict, List

from ..tools.logger import log_once
from ..tools.register import MindFormerModuleType as T
from ..tools.register import MindFormerRegister
from ..tools.register.register import accepted_kwargs
from .loader import ConfigError
from .types import annotations, plain_type, type_problem

FREE = "free"


class Typed:
    """A mapping with `type:` naming a registered component; other keys go to its constructor."""

    def __init__(self, module_type: T, nested: Dict[str, Any] = None, optional_type: bool = False):
        self.module_type, self.nested, self.optional_type = module_type, nested or {}, optional_type


class ListOf:
    """A list whose items all follow one schema (a single mapping is accepted as a list of one)."""

    def __init__(self, item):
        self.item = item


class Refused:
    """A key accepted only at an inert value: any other value (on `devices`, or on all) stops the run at
    validation with `why`."""

    def __init__(self, why: str, inert=(None, False, 0, "", [], {}), devices=None):
        self.why, self.devices = why, devices
        self.inert = inert if callable(inert) else list(inert)


class NoEffect:
    """A pure speed or memory hint that cannot change results on `devices` (all if None): logged once."""

    def __init__(self, why: str, devices=None):
        self.why, self.devices = why, devices


def _keys(*names: str, rule=None) -> Dict[str, Any]:
    """Keys read by the code (rule None), or all refused / without effect by one rule."""
    return {n: rule for n in " ".join(names).split()}


_NO_EFFECT_HERE = "a dataset pipeline speed setting; the generator source here is read by one worker"
_NO_CONTEXT_PARALLEL = ("context parallel is planned (python -m mindformers.parallel) but not wired: no attention "
                        "strategy splits the sequence over it")

DATASET = {
    **_keys("input_columns output_columns num_parallel_workers drop_remainder batch_size repeat seed",
            "dynamic_batch divisor remainder eod_reset eod_token_id construct_args_key column_order"),
    **_keys("pad_token_id max_length tokenizer",
            rule=Refused("set it on the data loader or handler (padding, seq_length) or in processor.tokenizer")),
    **_keys("python_multiprocessing numa_enable prefetch_size", rule=NoEffect(_NO_EFFECT_HERE)),
    **_keys("auto_tune autotune_per_step filepath_prefix profile",
            rule=NoEffect("MindSpore dataset autotuning/profiling only tunes pipeline speed")),
    "text_transforms": Refused("text transforms are not supported; preprocess the data instead"),
    "data_loader": Typed(T.DATASET_LOADER),
}

SCHEMA: Dict[str, Any] = {
    **_keys("seed run_mode output_dir load_checkpoint load_ckpt_format auto_trans_ckpt resume_training",
            "use_parallel pretrained_model_dir train_precision_sync infer_precision_sync ignore_data_skip",
            "data_skip_steps print_separate_loss do_eval eval_step_interval eval_epoch_interval merge_lora",
            "allow_pickle_checkpoint profile profile_start_step profile_stop_step init_start_profile",
            "profile_communication profile_memory profile_rank_ids profile_pipeline profile_output profiler_level",
            "lr_scale lr_scale_factor predict_batch_size input_data device_num",
            "resume_by_last_timestamp_ckpt"),
    "profile_level": Refused("per-request latency profiling of predict is not implemented; use profile: True "
                             "with profiler_level", inert=(None, 1)),
    **_keys("transform_process_num load_ckpt_async postprocess_use_numpy",
            rule=NoEffect("a speed setting with no effect on results")),
    # upstream multiplies the per-card batch by it under semi-auto and sums the slices' losses: not only speed
    "micro_batch_interleave_num": Refused("upstream's MicroBatchInterleaved (each batch cut into N interleaved "
                                          "slices whose losses are summed) is not implemented; set it to 1",
                                          inert=(None, 1)),
    **_keys("auto_tune filepath_prefix autotune_per_step",
            rule=NoEffect("MindSpore dataset autotuning only tunes pipeline speed")),
    "use_legacy": NoEffect("upstream's legacy and mcore model stacks both map onto this suite's one model "
                           "implementation, which computes the same model"),
    "src_strategy_path_or_dir": Refused("sharded checkpoints here carry their own layout (rank_*/strategy "
                                        "files) and are merged on load; remove the key"),
    "only_save_strategy": Refused("saving only the parallel strategy needs semi-auto parallel (Ascend)"),
    "remove_redundancy": Refused("checkpoints here are written once by rank 0 (data parallel); there are no "
                                 "redundant copies to remove"),
    "remote_save_url": Refused("remote (OBS) checkpoint upload is not supported; copy output_dir yourself"),
    "local_rank": Refused("ranks come from msrun's environment; remove the key"),
    "adapter_id": Refused("multi-adapter (multi-LoRA) serving is not supported; use pet_config.adapter_dir"),
    "mstx": Refused("mstx profiling markers are not implemented"),
    "layer_scale": Refused("layer-wise LR decay (layer_scale/layer_decay) is not implemented"),
    "layer_decay": NoEffect("read only with layer_scale: True"),
    "use_checkpoint_health_monitor": Refused("the checkpoint health monitor needs Ascend's TFT service"),
    "trainer": Typed(T.TRAINER),
    "runner_config": {
        **_keys("epochs batch_size gradient_accumulation_steps stop_step"),
        **_keys("initial_epoch initial_step", rule=Refused("a resumed run starts at the step in its checkpoint's "
                                                           "state.json; use resume_training", inert=(None, 0))),
        **_keys("sink_mode sink_size", rule=NoEffect("data sinking only saves host-device copies")),
    },
    # the wrapper's norm_groups and tensor_parallel arguments come from monitor_config and parallel_config
    "runner_wrapper": Typed(T.WRAPPER, {key: Refused(f"set by the trainer from {source}; remove it") for key, source in
                                        (("norm_groups", "monitor_config"),
                                         ("tensor_parallel", "parallel_config.model_parallel"))}),
    "optimizer": Typed(T.OPTIMIZER, {"swap": Refused("swapping optimizer states to host memory is not "
                                                     "implemented")}),
    "lr_schedule": Typed(T.LR),
    "grouped_lr_schedule": {"default": Typed(T.LR), "grouped": ListOf(Typed(T.LR, {"params": None}))},
    "train_dataset": DATASET,
    "eval_dataset": DATASET,
    "train_dataset_task": Typed(T.DATASET, {"dataset_config": DATASET}),
    "eval_dataset_task": Typed(T.DATASET, {"dataset_config": DATASET}),
    "context": {
        **_keys("mode device_target device_id max_call_depth save_graphs save_graphs_path memory_optimize_level",
                "runtime_num_threads deterministic enable_compile_cache compile_cache_path jit_config",
                "pynative_synchronize precompile_only"),
        # passed to mindspore.set_context on an accelerator (core/context.py)
        **_keys("max_device_memory mempool_block_size op_timeout enable_graph_kernel graph_kernel_flags",
                "affinity_cpu_list inter_op_parallel_num", rule=NoEffect("a device memory/speed setting",
                                                                         devices=("CPU",))),
        "ascend_config": NoEffect("Ascend precision and speed settings", devices=("CPU",)),
    },
    "parallel": {
        **_keys("parallel_mode gradients_mean device_num full_batch dataset_strategy search_mode enable_alltoall",
                "strategy_ckpt_config strategy_ckpt_save_file strategy_ckpt_load_file enable_parallel_optimizer",
                "parallel_optimizer_config pipeline_config loss_repeated_mean gradient_fp32_sync"),
        "auto_pipeline": Refused("automatic pipeline stage search is not implemented"),
    },
    "parallel_config": {
        # pipeline_stage, micro_batch_num, expert_parallel, use_seq_parallel, optimizer_shard: wired under semi-auto
        # parallel on Ascend only; elsewhere `_check_parallel` refuses them by name
        **_keys("data_parallel model_parallel pipeline_stage micro_batch_num vocab_emb_dp optimizer_shard",
                "expert_parallel use_seq_parallel"),
        "gradient_aggregation_group": NoEffect("communication fusion only changes speed"),
        "context_parallel": Refused(_NO_CONTEXT_PARALLEL, inert=(None, 1)),
        **_keys("context_parallel_algo ulysses_degree_in_cp",
                rule=Refused("context parallel is not implemented", inert=(None, "colossalai_cp", 1))),
        **_keys("mem_coeff seq_split_num", rule=Refused("a pipeline/sequence-split tuning key that is not "
                                                         "wired (the pipeline here takes micro_batch_num only)",
                                                         inert=(None, 0.1, 1))),
        "virtual_pipeline_model_parallel_size": Refused("virtual pipeline stages are not implemented",
                                                        inert=(None, 1)),
    },
    "recompute_config": {
        "recompute": None,  # whole decoder layers (trainer/builders.apply_recompute_section)
        "select_recompute": Refused("recomputing chosen ops is not implemented; use recompute: True for whole "
                                    "layers", inert=(None, False, [], {})),
        **_keys("select_comm_recompute mp_comm_recompute parallel_optimizer_comm_recompute recompute_slice_activation",
                "select_recompute_exclude select_comm_recompute_exclude",
                rule=NoEffect("recomputing communication or chosen ops only trades compute for memory and leaves "
                              "results unchanged")),
    },
    "moe_config": Refused("the MoE families here read their sizes from model.model_config (num_experts, "
                          "num_experts_per_tok, ...); a top-level moe_config may only describe a dense model "
                          "(expert_num: 1)",
                          inert=lambda v: not v or (isinstance(v, dict) and v.get("expert_num", 1) == 1)),
    "swap_config": {
        **_keys("swap default_prefetch layer_swap op_swap",
                rule=Refused("host-device memory swapping of activations is not implemented")),
    },
    "callbacks": ListOf(Typed(T.CALLBACK)),
    "eval_callbacks": Refused("callbacks during evaluate are not supported; put monitors under callbacks"),
    "metric": ListOf(Typed(T.METRIC)),
    "model": {
        "model_config": Typed(T.CONFIG, optional_type=True),
        "arch": Typed(T.MODELS),
    },
    # the trainer builds the tokenizer itself; `type`, if given, must name a registered processor
    "processor": Typed(T.PROCESSOR, {"tokenizer": Typed(T.TOKENIZER)}, optional_type=True),
    "generation_config": _keys("max_length max_new_tokens min_new_tokens do_sample temperature top_k top_p",
                               "repetition_penalty num_beams eos_token_id pad_token_id bos_token_id",
                               "use_past stop_strings length_penalty seed use_chat_template"),
    "monitor_config": _keys("monitor_on dump_path target invert step_interval local_loss_format",
                            "device_local_loss_format local_norm_format device_local_norm_format",
                            "optimizer_state_format weight_state_format throughput_baseline print_struct",
                            "check_for_global_norm global_norm_spike_threshold",
                            "global_norm_spike_count_threshold embedding_size_format spike_factor spike_window"),
    "preference": _keys("loss_type beta gamma label_smoothing"),
    "tensorboard": {
        **_keys("tensorboard_dir tensorboard_queue_size log_loss_scale_to_tensorboard log_timers_to_tensorboard"),
        "log_expert_load_to_tensorboard": Refused("expert load is not recorded (the MoE layers here compute "
                                                  "every expert densely)"),
    },
}


def validate_config(cfg, run: bool = True) -> None:
    """Check every key of `cfg` against SCHEMA; raise ConfigError listing each problem on its own line.

    Keys without effect on this device are logged once each. `run=False` checks a layout that is only planned
    (python -m mindformers.parallel): parallel settings that cannot run here are then not refused."""
    sectioned = [k for k in SECTIONED_FORM if k in cfg]
    if sectioned:
        raise ConfigError(f"{cfg.where(sectioned[0])}: this is upstream's sectioned config form "
                          f"({', '.join(k + ':' for k in sectioned)}), which this suite does not read; write it in "
                          f"the classic form (load_checkpoint, runner_config, lr_schedule, parallel_config; "
                          f"docs/upstream.md)")
    errors: List[str] = []
    device = (cfg.get("context") or {}).get("device_target") or "CPU"
    _check(cfg, SCHEMA if run else _PLANNING_SCHEMA, (), cfg, errors, device)
    if run:
        _check_parallel(cfg, device, errors)
    if errors:
        raise ConfigError("\n".join(errors))


# the schema for planning a layout: parallel_config's refused keys are what the planner is there to show
_PLANNING_SCHEMA = {**SCHEMA, "parallel_config": {k: None for k in SCHEMA["parallel_config"]}}
# top-level sections of upstream's newer (pynative, torchtitan-style) config form
SECTIONED_FORM = ("checkpoint", "training", "parallelism", "lr_scheduler")


# parallel_config settings whose mechanism exists only under semi-auto parallel on Ascend (parallel/apply.py,
# parallel/semi_auto.py, wrapper.MFPipelineWithLossScaleCell): key -> (is it asking for it, default, mechanism)
_SEMI_AUTO_ONLY = {
    "pipeline_stage": (lambda v: _int(v) > 1, 1, "pipeline parallel (MindSpore's Pipeline cell over micro-batches)"),
    "expert_parallel": (lambda v: _int(v) > 1, 1, "expert parallel (sharded expert BatchMatMuls)"),
    "use_seq_parallel": (lambda v: v is True, False, "sequence parallel (sharded norms, reduce-scattered outputs)"),
    "optimizer_shard": (lambda v: v is True, False, "the parallel optimizer (optimizer state split over dp)"),
}


def _int(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _check_parallel(cfg, device: str, errors: List[str]):
    """Parallel settings that this device or this suite cannot run, refused before any work starts."""
    layout = cfg.get("parallel_config") or {}
    mode = (cfg.get("parallel") or {}).get("parallel_mode", 0)
    if cfg.get("use_parallel") and mode not in (0, "data_parallel", None) and device != "Ascend":
        errors.append(f"{cfg.where('parallel', 'parallel_mode')}: 'parallel.parallel_mode: {mode!r}' needs Ascend "
                      f"(MindSpore runs only data parallel on {device}); set parallel_mode: 0")
    # model_parallel > 1 runs on any device as tensor parallel on explicit collectives in data-parallel mode
    # (parallel/tensor_parallel.py, msrun workers), and as operator sharding under semi-auto parallel on Ascend
    tensor_parallel = cfg.get("use_parallel") and mode in (0, "data_parallel", None)
    semi_auto = bool(cfg.get("use_parallel")) and mode in (1, "semi_auto_parallel") and device == "Ascend"
    value = layout.get("model_parallel")
    if _int(value) > 1 and device != "Ascend" and not tensor_parallel:
        errors.append(f"{cfg.where('parallel_config', 'model_parallel')}: 'parallel_config.model_parallel: {value}' "
                      f"is not supported on {device}: tensor parallel needs use_parallel: True (msrun workers) and "
                      f"parallel_mode: 0, operator sharding (semi-auto parallel) needs Ascend; set it to 1")
    here = f" on {device}" if device != "Ascend" else (" without use_parallel" if not cfg.get("use_parallel")
                                                         else f" with parallel_mode {mode!r}")
    for key, (asked, default, mechanism) in _SEMI_AUTO_ONLY.items():
        if asked(layout.get(key)) and not semi_auto:
            errors.append(f"{cfg.where('parallel_config', key)}: 'parallel_config.{key}: {layout.get(key)!r}' is not "
                          f"supported{here}: {mechanism} needs Ascend semi-auto parallel (use_parallel: True and "
                          f"parallel_mode: 1); set it to {default}")
    optimizer = (cfg.get("optimizer") or {}).get("type")
    if _int(value) > 1 and optimizer == "Adafactor":
        errors.append(f"{cfg.where('optimizer', 'type')}: 'optimizer.type: Adafactor' is not supported with "
                      f"parallel_config.model_parallel: {value}: its factored row/column state is not split with the "
                      f"weights; use AdamW, or model_parallel: 1")
    pipeline = _int(layout.get("pipeline_stage")) > 1
    micro = layout.get("micro_batch_num")
    if _int(micro) > 1 and not pipeline:
        errors.append(f"{cfg.where('parallel_config', 'micro_batch_num')}: 'parallel_config.micro_batch_num: {micro}' "
                      f"is not supported with pipeline_stage 1: micro-batches are the pipeline's (for gradient "
                      f"accumulation use runner_config.gradient_accumulation_steps); set it to 1")
    if semi_auto:
        _check_semi_auto(cfg, layout, pipeline, errors)
    dp = layout.get("data_parallel")
    if isinstance(dp, int) and dp > 1 and not cfg.get("use_parallel"):
        errors.append(f"{cfg.where('parallel_config', 'data_parallel')}: 'parallel_config.data_parallel: {dp}' needs "
                      f"use_parallel: True and {dp} workers started by msrun_launcher.sh; set it to 1 for one process")


def _check_semi_auto(cfg, layout, pipeline: bool, errors: List[str]):
    """What semi-auto parallel (and its pipeline) is not wired to run with."""
    if layout.get("optimizer_shard") is True and (cfg.get("parallel") or {}).get("enable_parallel_optimizer") is False:
        errors.append(f"{cfg.where('parallel_config', 'optimizer_shard')}: 'parallel_config.optimizer_shard: True' "
                      f"contradicts parallel.enable_parallel_optimizer: False, which decides; set one of them")
    if not pipeline:
        return
    # runner_config.batch_size is one micro-batch, as upstream: a step reads micro_batch_num of them (parallel/batch.py)
    accum = (cfg.get("runner_config") or {}).get("gradient_accumulation_steps")
    if _int(accum) > 1:
        errors.append(f"{cfg.where('runner_config', 'gradient_accumulation_steps')}: 'runner_config."
                      f"gradient_accumulation_steps: {accum}' is not supported with pipeline_stage > 1: the pipeline's "
                      f"micro_batch_num micro-batches are the accumulation; set it to 1")
    if cfg.get("preference"):
        errors.append(f"{cfg.where('preference')}: a 'preference' section is not supported with pipeline_stage > 1: "
                      f"its loss and reference model are not placed on stages; remove it or set pipeline_stage: 1")
    wrapper = (cfg.get("runner_wrapper") or {}).get("type")
    if wrapper not in (None, "MFTrainOneStepCell", "MFPipelineWithLossScaleCell"):
        errors.append(f"{cfg.where('runner_wrapper', 'type')}: 'runner_wrapper.type: {wrapper}' is not supported with "
                      f"pipeline_stage > 1: pipeline parallel trains through MFPipelineWithLossScaleCell")


def _applies(rule, device: str) -> bool:
    return rule.devices is None or device in rule.devices


def _is_inert(rule: Refused, value) -> bool:
    return rule.inert(value) if callable(rule.inert) else value in rule.inert


def _check(value, schema, path, cfg, errors, device):
    if path[1:] == ("dataset_config",) and cfg.get(str(path[0])[:-len("_task")]) is not None:
        return  # the task copy of <split>_dataset, which is checked itself
    if isinstance(schema, Refused):
        if _applies(schema, device) and not _is_inert(schema, value):
            errors.append(f"{cfg.where(*path)}: '{_dotted(path)}: {value!r}' is not supported"
                          f"{' on ' + device if schema.devices else ''}: {schema.why}")
        return
    if isinstance(schema, NoEffect):
        if _applies(schema, device) and value not in (None, False) and path[-1:]:
            log_once(_dotted(path), "%s: has no effect on %s (%s)", _dotted(path), device, schema.why)
        return
    if schema is None and value is not None:
        problem = type_problem(value, plain_type(path), _dotted(path), cfg.where(*path))
        if problem:
            errors.append(problem)
        return
    if schema is None or schema == FREE or value is None:
        return
    if isinstance(schema, ListOf):
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            _check(item, schema.item, path + ((i,) if isinstance(value, list) else ()), cfg, errors, device)
        return
    if not isinstance(value, dict):
        errors.append(f"{cfg.where(*path)}: '{_dotted(path)}' must be a mapping of keys, got {value!r}")
        return
    if isinstance(schema, Typed):
        _check_typed(value, schema, path, cfg, errors, device)
        return
    for key, sub in value.items():
        if key not in schema:
            errors.append(_unknown(cfg, path + (key,), schema))
        else:
            _check(sub, schema[key], path + (key,), cfg, errors, device)


def _check_typed(value, schema: Typed, path, cfg, errors, device):
    type_name = value.get("type")
    if type_name is None:
        if not schema.optional_type and any(k not in schema.nested for k in value):
            errors.append(f"{cfg.where(*path)}: '{_dotted(path)}' needs a 'type' key naming a registered "
                          f"{schema.module_type.name} (one of: "
                          f"{', '.join(MindFormerRegister.names(schema.module_type))})")
        for key, sub in value.items():
            if key in schema.nested:
                _check(sub, schema.nested[key], path + (key,), cfg, errors, device)
        return
    try:
        obj = MindFormerRegister.get_cls(schema.module_type, type_name)
    except KeyError as e:
        errors.append(f"{cfg.where(*path, 'type')}: '{_dotted(path + ('type',))}': {e.args[0]}")
        return
    accepted, hints = accepted_kwargs(obj), annotations(obj)
    for key, sub in value.items():
        if key == "type":
            continue
        if key in schema.nested:
            _check(sub, schema.nested[key], path + (key,), cfg, errors, device)
        elif accepted is not None and key not in accepted:
            errors.append(_unknown(cfg, path + (key,), accepted, f" ({type_name} accepts: {', '.join(accepted)})"))
        elif key in hints:
            problem = type_problem(sub, hints[key], _dotted(path + (key,)), cfg.where(*path, key))
            if problem:
                errors.append(problem)


def _unknown(cfg, path, valid, tail="") -> str:
    key = path[-1]
    close = difflib.get_close_matches(str(key), [str(v) for v in valid], n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"{cfg.where(*path)}: unknown key '{_dotted(path)}'{hint}{tail}"


def _dotted(path) -> str:
    return ".".join(str(p) for p in path)
