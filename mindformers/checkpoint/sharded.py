"""Distributed checkpoints: per-rank shards plus a strategy file; merge them, or re-slice for another layout.

Layout of a sharded checkpoint directory:

    <dir>/strategy.json                 the ShardPlan the shards were cut with (mindformers/parallel/plan.py)
    <dir>/rank_<r>/model.safetensors    what rank r holds: its slice of every parameter on its stage/experts

A semi-auto parallel run saves the same layout with one run checkpoint per step inside each rank directory
(`save_rank_checkpoint`, called by CheckpointMonitor on every rank): <dir>/rank_<r>/<prefix>-step<N>/ holds rank
r's slices of the weights and of the optimizer state, with state.json and `latest` as in a one-process run, and
MindSpore's own strategy file of that rank (ms_strategy.ckpt) when the run wrote one. Loading such a directory
merges the step `latest` of rank_0 names, which every rank must hold; loading one rank's step directory merges
that step (resume_training does, for the weights and, from optimizer.safetensors, the optimizer state).

Merging reads, for every parameter (and every optimizer state `<prefix>.<parameter>`, split like its parameter),
the slices of the ranks at data/context index 0 on a stage that holds it (and, for experts, on the expert group's
ranks) and concatenates them along the split dims; the data-parallel replicas are not read. Re-slicing cuts the
merged tensors with a second plan, so a checkpoint moves between any two layouts of the same model (dp/mp/pp/ep
changes), which is what `auto_trans_ckpt` does at load.
"""
import json
import os
import re
import shutil
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..parallel.plan import ShardPlan, param_of
from .checkpoint import STATE_FILE, resolve_checkpoint, write_checkpoint
from .safetensors_io import read_safetensors

STRATEGY_FILE = "strategy.json"
SHARD_FILE = "model.safetensors"
MS_STRATEGY_FILE = "ms_strategy.ckpt"  # MindSpore's strategy file of the rank, for its own transform tools


def is_sharded(path: str) -> bool:
    """Whether `path` is a sharded checkpoint directory (strategy.json + rank_*/)."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, STRATEGY_FILE))


def shard_weights(weights: Dict[str, np.ndarray], plan: ShardPlan, rank: int) -> Dict[str, np.ndarray]:
    """Rank `rank`'s slices of full `weights` under `plan`."""
    _check_names(weights, plan, "weights")
    return rank_slices(weights, plan, rank)


def save_sharded(weights: Dict[str, np.ndarray], plan: ShardPlan, directory: str, ranks=None):
    """Write `directory`/rank_<r>/model.safetensors for `ranks` (default: all) and the strategy file."""
    from safetensors.numpy import save_file

    os.makedirs(directory, exist_ok=True)
    for rank in range(plan.layout.device_num) if ranks is None else ranks:
        rank_dir = os.path.join(directory, f"rank_{rank}")
        os.makedirs(rank_dir, exist_ok=True)
        tmp = os.path.join(rank_dir, SHARD_FILE + ".tmp")
        save_file(shard_weights(weights, plan, rank), tmp)
        os.replace(tmp, os.path.join(rank_dir, SHARD_FILE))
    plan.save(os.path.join(directory, STRATEGY_FILE))


def rank_slices(arrays: Dict[str, np.ndarray], plan: ShardPlan, rank: int,
                what: str = "weights") -> Dict[str, np.ndarray]:
    """Rank `rank`'s part of `arrays`: weights, or optimizer state named `<prefix>.<parameter>`.

    Entries of parameters the rank does not hold (other stages, other expert groups) are left out; a whole array
    is cut to the rank's slice, one already of the slice's shape (what a semi-auto parallel rank holds after
    compiling) is kept; entries of no parameter (step counters, the loss scale) are kept as they are."""
    out = {}
    for key, value in arrays.items():
        name = param_of(key, plan.params)
        if name is None:
            out[key] = value
            continue
        if not plan.holds(name, rank):
            continue
        shape, local = tuple(value.shape), plan.local_shape(name)
        if shape == local:
            out[key] = value
        elif shape == plan.params[name].shape:
            out[key] = np.ascontiguousarray(value[plan.slice_index(name, rank)])
        else:
            raise ValueError(f"{what} {key}: shape {shape} is neither the whole {plan.params[name].shape} nor rank "
                             f"{rank}'s slice {local} of the strategy (a parallel-optimizer slice must be gathered "
                             f"first)")
    return out


def save_rank_checkpoint(directory: str, prefix: str, step: int, rank: int, plan: ShardPlan,
                         weights: Dict[str, np.ndarray], opt_state: Optional[Dict[str, np.ndarray]] = None,
                         state: Optional[dict] = None, ms_strategy: Optional[str] = None) -> str:
    """Write rank `rank`'s part of a semi-auto parallel run's checkpoint of step `step`: its slices under
    `directory`/rank_<r>/<prefix>-step<N>/ (atomically, as write_checkpoint), the plan as `directory`/strategy.json
    and MindSpore's strategy file `ms_strategy` (if the run wrote one) as rank_<r>/ms_strategy.ckpt."""
    rank_dir = os.path.join(directory, f"rank_{rank}")
    path = write_checkpoint(rank_dir, prefix, step, rank_slices(weights, plan, rank),
                            None if opt_state is None else rank_slices(opt_state, plan, rank, "optimizer state"),
                            {**(state or {}), "rank": rank, "strategy": STRATEGY_FILE})
    # every rank writes the same plan: a temporary of its own, renamed into place
    tmp = os.path.join(directory, f".{STRATEGY_FILE}.tmp-rank{rank}-{os.getpid()}")
    plan.save(tmp)
    os.replace(tmp, os.path.join(directory, STRATEGY_FILE))
    if ms_strategy and os.path.isfile(ms_strategy):
        shutil.copyfile(ms_strategy, os.path.join(rank_dir, MS_STRATEGY_FILE))
    return path


def _rank_file(directory: str, rank: int, step_name: Optional[str], file: str = SHARD_FILE) -> str:
    """rank_<r>/model.safetensors, or in a run's per-rank layout rank_<r>/<step_name>/<file>."""
    if step_name is None:
        return os.path.join(directory, f"rank_{rank}", file)
    return os.path.join(directory, f"rank_{rank}", step_name, file)


def _step_name(directory: str) -> Optional[str]:
    """None for shards written directly into rank_<r>/; for a run's per-rank checkpoints the step rank_0's
    `latest` names (or its newest complete one)."""
    rank0 = os.path.join(directory, "rank_0")
    if os.path.isfile(os.path.join(rank0, SHARD_FILE)) or not os.path.isdir(rank0):
        return None
    return os.path.basename(os.path.dirname(resolve_checkpoint(rank0, f"sharded checkpoint {directory}")))


def rank_step(path: str) -> Optional[Tuple[str, str]]:
    """(sharded directory, step name) when `path` is one rank's step of a run's per-rank checkpoints
    (<dir>/rank_<r>/<prefix>-step<N>/ beside <dir>/strategy.json), else None. Such a directory stands for that
    step of the whole run: a rank's slices alone fit no model."""
    step_dir = os.path.normpath(os.path.abspath(path))
    rank_dir = os.path.dirname(step_dir)
    directory = os.path.dirname(rank_dir)
    if (re.fullmatch(r"rank_\d+", os.path.basename(rank_dir)) and is_sharded(directory)
            and os.path.isfile(os.path.join(step_dir, STATE_FILE))):
        return directory, os.path.basename(step_dir)
    return None


def merge_sharded(directory: str, step_name: Optional[str] = None, file: str = SHARD_FILE) -> Dict[str, np.ndarray]:
    """The full weights of a sharded checkpoint directory (shards in rank_<r>/, or a run's per-rank checkpoints:
    step `step_name`, by default the one rank_0's `latest` names); with `file` optimizer.safetensors, that step's
    full optimizer state (an entry of no parameter, the same on every rank, is taken from the first rank read)."""
    plan = ShardPlan.load(os.path.join(directory, STRATEGY_FILE))
    lay = plan.layout
    step_name = step_name or _step_name(directory)
    cache: Dict[int, Dict[str, np.ndarray]] = {}

    def shard(rank: int) -> Dict[str, np.ndarray]:
        if rank not in cache:
            path = _rank_file(directory, rank, step_name, file)
            if not os.path.isfile(path):
                step = f"; rank_0's latest checkpoint is {step_name}, which every rank must hold" if step_name else ""
                raise FileNotFoundError(f"sharded checkpoint {directory}: {path} is missing (strategy.json "
                                        f"describes {lay.device_num} ranks{step})")
            cache[rank] = read_safetensors(path)
        return cache[rank]

    def owners(name: str) -> List[int]:
        # data/context index 0 (for experts the first of the expert group: groups are contiguous blocks of
        # dp / ep data indices) of the first stage holding it, every mp index it is split over
        info = plan.params[name]
        dp = 0 if info.expert_group is None else info.expert_group * (lay.dp // lay.ep)
        return [lay.rank(pp=info.stages[0], dp=dp, mp=mp) for mp in range(lay.mp if "mp" in info.split else 1)]

    ranks = sorted({rank for name in plan.params for rank in owners(name)})
    # weights: every parameter of the plan; optimizer state: whatever its owners hold
    keys = list(plan.params) if file == SHARD_FILE else sorted({key for rank in ranks for key in shard(rank)})
    merged = {}
    for key in keys:
        name = param_of(key, plan.params)
        if name is None:
            merged[key] = next(shard(rank)[key] for rank in ranks if key in shard(rank))
            continue
        full = None
        for rank in owners(name):
            piece = shard(rank).get(key)
            if piece is None:
                raise ValueError(f"sharded checkpoint {directory}: rank_{rank} lacks {key}, which strategy.json "
                                 f"places there")
            expected = plan.local_shape(name)
            if tuple(piece.shape) != expected:
                raise ValueError(f"sharded checkpoint {directory}: rank_{rank} {key} has shape "
                                 f"{tuple(piece.shape)}, strategy.json says {expected}")
            if full is None:
                full = np.empty(plan.params[name].shape, piece.dtype)
            full[plan.slice_index(name, rank)] = piece
        merged[key] = full
    return merged


def transform_checkpoint(src: str, dst: str, dst_plan: Optional[ShardPlan] = None) -> str:
    """Merge sharded checkpoint `src`; write one full `dst`/model.safetensors, or shards for `dst_plan`."""
    from safetensors.numpy import save_file

    weights = merge_sharded(src)
    if dst_plan is None:
        os.makedirs(dst, exist_ok=True)
        out = os.path.join(dst, SHARD_FILE)
        save_file(weights, out + ".tmp")
        os.replace(out + ".tmp", out)
        return out
    save_sharded(weights, dst_plan, dst)
    return dst


def _check_names(weights: Dict[str, np.ndarray], plan: ShardPlan, what: str):
    missing = sorted(set(plan.params) - set(weights))
    extra = sorted(set(weights) - set(plan.params))
    if missing or extra:
        raise ValueError(f"{what} do not match the strategy: missing {missing[:8]}, not in strategy {extra[:8]}")
    bad = [f"{n} {tuple(weights[n].shape)} vs {plan.params[n].shape}" for n in weights
           if tuple(weights[n].shape) != tuple(plan.params[n].shape)]
    if bad:
        raise ValueError(f"{what} do not match the strategy's shapes: {'; '.join(bad[:8])}")


def read_strategy_summary(directory: str) -> str:
    """One line describing the layout a sharded checkpoint was written with."""
    with open(os.path.join(directory, STRATEGY_FILE), encoding="utf-8") as f:
        layout = json.load(f).get("layout", {})
    return ", ".join(f"{k}={v}" for k, v in layout.items() if k in ("dp", "mp", "pp", "cp", "ep"))
