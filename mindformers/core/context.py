"""Sets up MindSpore from the `context`, `seed` and `use_parallel` keys of a config."""
import logging
import os
import random

import numpy as np

logger = logging.getLogger("mindformers")

DEVICES = ("CPU", "GPU", "Ascend")
# context keys that only mean something on an accelerator; on CPU they are reported and not applied
ACCELERATOR_ONLY = ("max_device_memory", "mempool_block_size", "ascend_config", "op_timeout",
                    "enable_graph_kernel", "graph_kernel_flags", "affinity_cpu_list")


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
        raise RuntimeError(f"context.device_target: cannot use {device} here ({e}); "
                           f"set device_target: CPU to run on this machine") from None

    deterministic = ctx.pop("deterministic", None)
    if deterministic in (True, "ON") or config.get("train_precision_sync"):
        ms.set_deterministic(True)
    threads = ctx.pop("runtime_num_threads", None)
    if threads:
        ms.runtime.dispatch_threads_num(int(threads))
    for key in ("max_call_depth",):
        if ctx.get(key) is not None:
            ms.set_recursion_limit(int(ctx.pop(key)))
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
    for key in list(ctx):
        if key in ACCELERATOR_ONLY and device == "CPU":
            logger.info("context.%s applies to Ascend/GPU only; not used on CPU", key)
            ctx.pop(key)
    if ctx:
        for key, value in ctx.items():
            if value is not None:
                ms.set_context(**{key: value})

    seed = int(config.get("seed") or 0)
    rank_id, device_num = 0, 1
    if config.get("use_parallel"):
        rank_id, device_num = _init_distributed(config, device)
    set_seed(seed)
    return {"device_target": device, "mode": mode, "rank_id": rank_id, "device_num": device_num}


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
        raise RuntimeError("use_parallel: True needs the workers started by msrun: "
                           "bash msrun_launcher.sh \"run_mindformer.py --config ...\" <worker_num>")
    init()
    rank_id, device_num = get_rank(), get_group_size()
    parallel = dict(config.get("parallel") or {})
    mode = parallel.get("parallel_mode", 0)
    names = {0: "data_parallel", 1: "semi_auto_parallel", 2: "auto_parallel", 3: "hybrid_parallel"}
    mode_name = names.get(mode, mode)
    if mode_name != "data_parallel" and device == "CPU":
        raise RuntimeError(f"parallel.parallel_mode: {mode} ({mode_name}) needs Ascend devices; on CPU use "
                           f"parallel_mode: 0 (data parallel)")
    ms.set_auto_parallel_context(parallel_mode=mode_name, gradients_mean=parallel.get("gradients_mean", True),
                                 device_num=device_num)
    return rank_id, device_num
