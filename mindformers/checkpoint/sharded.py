"""Distributed checkpoints: per-rank shards plus a strategy file; merge them, or re-slice for another layout.

Layout of a sharded checkpoint directory:

    <dir>/strategy.json                 the ShardPlan the shards were cut with (mindformers/parallel/plan.py)
    <dir>/rank_<r>/model.safetensors    what rank r holds: its slice of every parameter on its stage/experts

Merging reads, for every parameter, the slices of the ranks at data/context index 0 on a stage that holds
it (and, for experts, on the expert group's ranks) and concatenates them along the split dims; the data-
parallel replicas are not read. Re-slicing cuts the merged tensors with a second plan, so a checkpoint moves
between any two layouts of the same model (dp/mp/pp/ep changes), which is what `auto_trans_ckpt` does at load.
"""
import json
import os
from typing import Dict, Optional

import numpy as np

from ..parallel.plan import ShardPlan

STRATEGY_FILE = "strategy.json"
SHARD_FILE = "model.safetensors"


def is_sharded(path: str) -> bool:
    """Whether `path` is a sharded checkpoint directory (strategy.json + rank_*/)."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, STRATEGY_FILE))


def shard_weights(weights: Dict[str, np.ndarray], plan: ShardPlan, rank: int) -> Dict[str, np.ndarray]:
    """Rank `rank`'s slices of full `weights` under `plan`."""
    _check_names(weights, plan, "weights")
    return {name: np.ascontiguousarray(value[plan.slice_index(name, rank)])
            for name, value in weights.items() if plan.holds(name, rank)}


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


def merge_sharded(directory: str) -> Dict[str, np.ndarray]:
    """The full weights of a sharded checkpoint directory."""
    from safetensors.numpy import load_file

    plan = ShardPlan.load(os.path.join(directory, STRATEGY_FILE))
    lay = plan.layout
    cache: Dict[int, Dict[str, np.ndarray]] = {}

    def shard(rank: int) -> Dict[str, np.ndarray]:
        if rank not in cache:
            path = os.path.join(directory, f"rank_{rank}", SHARD_FILE)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"sharded checkpoint {directory}: {path} is missing (strategy.json "
                                        f"describes {lay.device_num} ranks)")
            cache[rank] = load_file(path)
        return cache[rank]

    merged = {}
    for name, info in plan.params.items():
        stage = info.stages[0]
        dp = 0 if info.expert_group is None else info.expert_group  # d % ep == group with d = group
        full = None
        for mp in range(lay.mp if "mp" in info.split else 1):
            rank = lay.rank(pp=stage, dp=dp, mp=mp)
            piece = shard(rank).get(name)
            if piece is None:
                raise ValueError(f"sharded checkpoint {directory}: rank_{rank} lacks {name}, which strategy.json "
                                 f"places there")
            expected = plan.local_shape(name)
            if tuple(piece.shape) != expected:
                raise ValueError(f"sharded checkpoint {directory}: rank_{rank} {name} has shape "
                                 f"{tuple(piece.shape)}, strategy.json says {expected}")
            if full is None:
                full = np.empty(info.shape, piece.dtype)
            full[plan.slice_index(name, rank)] = piece
        merged[name] = full
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
