"""Sets up MindSpore from the `context`, `seed` and `use_parallel` keys of a config."""
import hashlib
import json
import logging
import os
import random
import sys

import numpy as np

from ..parallel.plan import MeshLayout

logger = logging.getLogger("mindformers")

DEVICES = ("CPU", "GPU", "Ascend")
# context keys that only mean something on an accelerator; on CPU they are not applied (the schema logs them)
ACCELERATOR_ONLY = ("max_device_memory", "mempool_block_size", "ascend_config", "op_timeout",
                    "enable_graph_kernel", "graph_kernel_flags", "affinity_cpu_list", "inter_op_parallel_num")


# context keys handed to mindspore.set_context as they are
MS_CONTEXT_KEYS = ("pynative_synchronize", "precompile_only")


def build_context(config) -> dict:
    """Apply `config.context`, the seed and the distributed setup; return what was applied.

    Returns a dict with device_target, mode, rank_id and device_num, which the trainer uses.
    """
    import mindspore as ms

    ctx = dict(config.get("context") or {})
    device = ctx.pop("device_target", None) or "CPU"
    if device not in DEVICES:
        raise ValueError(f"context.device_target: '{device}' is not one of {', '.join(DEVICES)}")
    mode = ctx.pop("mode", 0)
    if mode not in (0, 1):
        raise ValueError(f"context.mode: {mode!r} must be 0 (GRAPH_MODE) or 1 (PYNATIVE_MODE)")
    device_id = int(os.environ.get("DEVICE_ID", ctx.pop("device_id", 0) or 0))
    ctx.pop("device_id", None)
    ms.set_context(mode=mode)
    try:
        ms.set_device(device, device_id if device != "CPU" else None)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"context.device_target: cannot use {device} here ({e}); "
                         f"set device_target: CPU to run on this machine") from None

    deterministic = ctx.pop("deterministic", None)
    sync_key = "infer_precision_sync" if config.get("run_mode") in ("eval", "predict") else "train_precision_sync"
    if deterministic in (True, "ON") or config.get(sync_key):
        ms.set_deterministic(True)
    threads = ctx.pop("runtime_num_threads", None)
    if threads:
        ms.runtime.dispatch_threads_num(int(threads))
    asked_depth = ctx.pop("max_call_depth", None)
    _ASKED_CALL_DEPTH["value"] = None if asked_depth is None else int(asked_depth)
    if asked_depth is not None:
        ms.set_recursion_limit(int(asked_depth))  # build_model raises it further if the model's depth needs it
    if ctx.get("save_graphs"):
        ms.set_context(save_graphs=ctx.pop("save_graphs"),
                       save_graphs_path=ctx.pop("save_graphs_path", "./graph"))
    ctx.pop("save_graphs", None)
    ctx.pop("save_graphs_path", None)
    jit_config = ctx.pop("jit_config", None)
    if jit_config:
        ms.set_context(jit_config=dict(jit_config))
    memory_level = ctx.pop("memory_optimize_level", None)
    if memory_level:
        ms.set_context(memory_optimize_level=memory_level)
    if ctx.get("max_device_memory") and device != "CPU":
        ms.set_memory(max_size=ctx.pop("max_device_memory"))
    cache_enabled, cache_base = ctx.pop("enable_compile_cache", None), ctx.pop("compile_cache_path", None)
    if cache_enabled:
        use_compile_cache(config, cache_base or os.path.join(config.get("output_dir") or "./output", "compile_cache"))
    elif _CACHE_ENV_SET:  # an earlier config in this process turned it on: this one did not ask for it
        for name in _CACHE_ENV_SET:
            os.environ.pop(name, None)
        _CACHE_ENV_SET.clear()
    for key in list(ctx):
        if key in ACCELERATOR_ONLY and device == "CPU":  # the config check logged it as having no effect here
            ctx.pop(key)
    for key in MS_CONTEXT_KEYS + (ACCELERATOR_ONLY if device != "CPU" else ()):
        if ctx.get(key) is not None:
            ms.set_context(**{key: ctx.pop(key)})
    leftover = {k: v for k, v in ctx.items() if v is not None}
    if leftover:
        raise ValueError(f"context.{next(iter(leftover))}: not a context key this suite applies")

    seed = int(config.get("seed") or 0)
    rank_id, device_num = 0, 1
    if config.get("use_parallel"):
        rank_id, device_num = _init_distributed(config, device)
    else:
        layout = MeshLayout.from_config(config.get("parallel_config"), None)
        if layout.device_num > 1:
            logger.warning("parallel_config asks for %d devices (dp=%d mp=%d pp=%d cp=%d) but use_parallel is False: "
                           "this run uses one device", layout.device_num, layout.dp, layout.mp, layout.pp, layout.cp)
    set_seed(seed)
    return {"device_target": device, "mode": mode, "rank_id": rank_id, "device_num": device_num}


# MindSpore's default recursion limit (context.max_call_depth), and the call depth one decoder layer adds to a
# compiled train step: about 30 measured for Qwen3 on MindSpore 2.10 (docs/performance.md); 64 leaves room for
# LoRA-wrapped and MoE layers. A limit is only a ceiling: a larger one costs nothing until the depth is reached.
DEFAULT_CALL_DEPTH = 1000
CALL_DEPTH_PER_LAYER = 64
# context.max_call_depth of the config build_context applied last (None: not set)
_ASKED_CALL_DEPTH = {"value": None}


def call_depth_for(num_layers: int) -> int:
    """The recursion limit under which a model of `num_layers` decoder layers compiles."""
    return DEFAULT_CALL_DEPTH + CALL_DEPTH_PER_LAYER * max(int(num_layers), 0)


def ensure_call_depth(num_layers: int) -> int:
    """Set MindSpore's recursion limit for a `num_layers`-deep model, never below the config's own
    context.max_call_depth; return the limit set."""
    import mindspore as ms
    limit = max(call_depth_for(num_layers), _ASKED_CALL_DEPTH["value"] or 0)
    ms.set_recursion_limit(limit)
    return limit


# the compile-cache environment variables this process set (cleared again for a config without the cache)
_CACHE_ENV_SET = set()
# Keys that do not change the compiled graphs: runs that differ only in these share a compile cache.
_NOT_IN_GRAPH = ("output_dir", "load_checkpoint", "resume_training", "remote_save_url", "src_strategy_path_or_dir",
                 "callbacks", "seed", "context.compile_cache_path", "context.enable_compile_cache")


def compile_cache_dir(config, base: str) -> str:
    """`base`/<fingerprint of the config and of this package's code>.

    MindSpore's compile cache checks a saved graph only against the entry script and the files it imports from
    outside site-packages: a run with another model config, another mindformers version (when installed) or
    changed --register_path components would load the old graph and train it without a word. Keying the
    directory on everything that shapes the graphs makes such a run compile afresh, in its own directory.
    """
    import mindspore as ms
    settings = json.loads(json.dumps(dict(config), sort_keys=True, default=str))
    for dotted in _NOT_IN_GRAPH:
        *parents, leaf = dotted.split(".")
        node = settings
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    digest.update(ms.__version__.encode())
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sources = [os.path.join(root, name) for root, _, files in os.walk(package) for name in files
               if name.endswith(".py")]
    # modules loaded with --register_path (user components; tools.register names them mf_user_*)
    sources += [m.__file__ for name, m in list(sys.modules.items())
                if name.startswith("mf_user_") and getattr(m, "__file__", None)]
    for path in sorted(sources):
        with open(path, "rb") as f:
            digest.update(f.read())
    return os.path.join(base, digest.hexdigest()[:16])


def use_compile_cache(config, base: str):
    """Turn on MindSpore's compile cache in a directory keyed by `compile_cache_dir` (through the environment
    variables MindSpore reads; its set_context keys for this are deprecated)."""
    path = compile_cache_dir(config, base)
    for name, value in (("MS_COMPILER_CACHE_ENABLE", "1"), ("MS_COMPILER_CACHE_PATH", path)):
        if name not in os.environ or name in _CACHE_ENV_SET:
            _CACHE_ENV_SET.add(name)
        os.environ[name] = value
    logger.info("compile cache: %s (a later run with the same config and code skips most of the compile)", path)


def set_seed(seed: int):
    """Seed MindSpore, numpy and Python's random."""
    import mindspore as ms
    ms.set_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _init_distributed(config, device: str):
    """Start communication (msrun sets the cluster env) and the parallel context."""
    import mindspore as ms
    from mindspore.communication import get_group_size, get_rank, init

    if "MS_WORKER_NUM" not in os.environ and "RANK_TABLE_FILE" not in os.environ:
        raise ValueError("use_parallel: True needs the workers started by msrun: "
                         "bash msrun_launcher.sh \"run_mindformer.py --config ...\" <worker_num>")
    init()
    rank_id, device_num = get_rank(), get_group_size()
    for key in ("device_num", "parallel.device_num"):
        given = config.get(key) if key == "device_num" else (config.get("parallel") or {}).get("device_num")
        if given not in (None, device_num):
            raise ValueError(f"{key}: {given} but msrun started {device_num} workers; remove the key or match them")
    parallel = dict(config.get("parallel") or {})
    mode_name = parallel_mode_name(config)
    layout = MeshLayout.from_config(config.get("parallel_config"), None)
    if mode_name == "data_parallel":
        beyond_dp = {k: v for k, v in (("pipeline_stage", layout.pp), ("context_parallel", layout.cp)) if v > 1}
        if beyond_dp:
            raise ValueError(f"parallel_config {beyond_dp} needs parallel.parallel_mode: 1 (semi_auto_parallel), "
                             f"but parallel_mode is 0 (data parallel); set them to 1 or switch the mode (Ascend)")
        if layout.mp > 1:  # tensor parallel on explicit collectives (parallel/tensor_parallel.py): dp x mp workers
            MeshLayout.from_config(config.get("parallel_config"), device_num)
        elif layout.dp not in (1, device_num):
            raise ValueError(f"parallel_config.data_parallel: {layout.dp} but msrun started {device_num} workers; "
                             f"set data_parallel: {device_num} (or 1)")
    else:
        MeshLayout.from_config(config.get("parallel_config"), device_num)  # the mesh must fit the devices
        if device == "CPU":
            raise ValueError(f"parallel.parallel_mode: {parallel.get('parallel_mode')} ({mode_name}) needs Ascend "
                             f"devices (MindSpore runs only data parallel on CPU); on CPU use parallel_mode: 0. "
                             f"Check the layout without devices: python -m mindformers.parallel --config <yaml>")
    kwargs = {}
    layout_keys = {k: parallel[k] for k in SEMI_AUTO_KEYS if parallel.get(k) not in (None, False, "", [], {})}
    if mode_name != "data_parallel":
        kwargs = {"pipeline_stages": layout.pp,
                  "enable_parallel_optimizer": bool(parallel.get("enable_parallel_optimizer", layout.optimizer_shard)),
                  **semi_auto_dataset_keys(layout_keys)}
    else:
        if layout_keys:
            logger.info("parallel.%s: no effect in data_parallel mode (MindSpore reads them under semi-auto/auto "
                        "parallel only)", ", parallel.".join(layout_keys))
        if parallel.get("enable_parallel_optimizer"):
            # not handed to MindSpore: in data_parallel mode it takes it on Ascend only, for its own optimizers
            # (nn.Optimizer._use_parallel_optimizer), and these optimizers do not broadcast a dp-sharded update
            logger.info("parallel.enable_parallel_optimizer: True has no effect in data_parallel mode: every worker "
                        "keeps the whole optimizer state (same results, more memory); it shards it under semi-auto "
                        "parallel (Ascend)")
    ms.set_auto_parallel_context(parallel_mode=mode_name, gradients_mean=parallel.get("gradients_mean", True),
                                 device_num=device_num, **kwargs)
    return rank_id, device_num


# parallel keys handed to mindspore.set_auto_parallel_context under semi-auto/auto parallel (Ascend)
SEMI_AUTO_KEYS = ("full_batch", "dataset_strategy", "search_mode", "enable_alltoall", "strategy_ckpt_config",
                  "strategy_ckpt_save_file", "strategy_ckpt_load_file", "parallel_optimizer_config",
                  "pipeline_config", "loss_repeated_mean", "gradient_fp32_sync")
_MODE_NAMES = {0: "data_parallel", 1: "semi_auto_parallel", 2: "auto_parallel", 3: "hybrid_parallel"}


def semi_auto_dataset_keys(keys: dict) -> dict:
    """`keys` with parallel.dataset_strategy as upstream hands it to MindSpore, which takes only a str or tuples:
    a YAML list becomes tuples, and with full_batch: True it is dropped (upstream resets it to 'full_batch'; MindSpore
    would split the inputs by it all the same, while every rank reads the whole batch: parallel/batch.py)."""
    strategy = keys.get("dataset_strategy")
    if not isinstance(strategy, (list, tuple)):
        return keys
    if keys.get("full_batch"):
        logger.info("parallel.full_batch: True: every rank reads the whole batch, so parallel.dataset_strategy %s "
                    "is replaced by 'full_batch', as upstream does", strategy)
        return {k: v for k, v in keys.items() if k != "dataset_strategy"}
    return {**keys, "dataset_strategy": tuple(tuple(s) for s in strategy)}


def parallel_mode_name(config) -> str:
    """MindSpore's name for `parallel.parallel_mode` (0-3 or the name itself)."""
    mode = (config.get("parallel") or {}).get("parallel_mode", 0)
    name = _MODE_NAMES.get(mode, mode)
    if name not in _MODE_NAMES.values():
        raise ValueError(f"parallel.parallel_mode: {mode!r} is not one of 0 (data_parallel), 1 (semi_auto_parallel), "
                         f"2 (auto_parallel), 3 (hybrid_parallel)")
    return name
