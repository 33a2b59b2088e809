"""The one weight loader: read a weights file (safetensors, MindSpore .ckpt, sharded run checkpoints, PyTorch
pickles on request) and put named arrays into a network's parameters with one set of rules.

Used for `load_checkpoint`, `model_config.checkpoint_name_or_path`, Hugging Face directories and GGUF files."""
from typing import Dict, Optional

import numpy as np

from ..modules.moe import is_step_state
from .checkpoint import resolve_checkpoint
from .safetensors_io import read_safetensors
from .sharded import is_sharded, merge_sharded, rank_step, read_strategy_summary
from .torch_pickle import is_pickle_file, read_torch_weights, refuse


def read_weights(path: str, allow_pickle: bool = False, key: str = "load_checkpoint") -> Dict[str, np.ndarray]:
    """Read a .safetensors or MindSpore .ckpt file into name -> numpy array (bfloat16 comes back as float32).

    PyTorch pickles (.bin/.pt/.pth) are refused unless `allow_pickle` (then read without running code)."""
    if is_pickle_file(path):
        return read_torch_weights(path) if allow_pickle else refuse(path)
    if path.endswith(".safetensors"):
        try:
            return read_safetensors(path)
        except ValueError as e:
            raise ValueError(f"{key}: {e}") from None
    if path.endswith(".ckpt"):
        import mindspore as ms
        return {k: v.asnumpy() for k, v in ms.load_checkpoint(path).items()}
    raise ValueError(f"{key}: {path}: unknown format; expected .safetensors or .ckpt (or a PyTorch "
                     f".bin/.pt/.pth with allow_pickle_checkpoint: True)")


def assign_weights(network, weights: Dict[str, np.ndarray], source: str, strict: bool = True,
                   missing_hint: str = "") -> Dict[str, list]:
    """Copy name -> array into `network`'s parameters, cast to each parameter's dtype.

    Shape mismatches are always an error; with `strict`, so are names missing from `weights` or not in the model
    (per-step statistics, `is_step_state`, may be on one side only). Returns the missing and unexpected names."""
    import mindspore as ms

    params = {p.name: p for p in network.get_parameters()}
    missing = sorted(n for n in set(params) - set(weights) if not is_step_state(n))
    unexpected = sorted(n for n in set(weights) - set(params) if not is_step_state(n))
    mismatched = [f"{n}: checkpoint {tuple(weights[n].shape)} vs model {tuple(params[n].shape)}"
                  for n in sorted(set(params) & set(weights)) if tuple(weights[n].shape) != tuple(params[n].shape)]
    problems = []
    if strict and missing:
        problems.append(f"missing from checkpoint ({len(missing)}): {', '.join(missing[:10])}{missing_hint}")
    if strict and unexpected:
        problems.append(f"not in model ({len(unexpected)}): {', '.join(unexpected[:10])}")
    if mismatched:
        problems.append("shape mismatch: " + "; ".join(mismatched[:10]))
    if problems:
        raise ValueError(f"{source} does not fit {type(network).__name__}: " + " | ".join(problems))
    for name in set(params) & set(weights):
        param, value = params[name], np.asarray(weights[name])
        if value.dtype.kind == "f":  # via float32: numpy has no bfloat16, and the cast to fp16/fp32 is exact
            value = value.astype(np.float32, copy=False)
        param.set_data(ms.Tensor(value, dtype=param.dtype))
    return {"missing": missing, "unexpected": unexpected}


def load_weights(network, path: str, strict: bool = True, allow_pickle: bool = False,
                 expected_format: Optional[str] = None, key: str = "load_checkpoint") -> Dict[str, list]:
    """Load the weights at `path` (a file, a run's checkpoint directory, per-rank shards, or one rank's step of a
    semi-auto run's per-rank checkpoints, which stands for that step of every rank) into `network`.

    `expected_format` (load_ckpt_format: safetensors or ckpt) must match the weights file found; errors name the
    config `key` that gave the path."""
    step = rank_step(path)  # one rank's step of a run's per-rank checkpoints: that step of every rank
    if is_sharded(path) or step:  # auto_trans_ckpt: per-rank shards are merged into the full weights first
        directory, step_name = step or (path, None)
        file = f"{path} (sharded: {read_strategy_summary(directory)})"
        weights = merge_sharded(directory, step_name)
    else:
        file = resolve_checkpoint(path, key)
        if expected_format and not file.endswith("." + expected_format):
            raise ValueError(f"load_ckpt_format: '{expected_format}' but {key} resolves to {file}; set "
                             f"load_ckpt_format to the file's format or point {key} at a .{expected_format}")
        weights = read_weights(file, allow_pickle, key)
    info = assign_weights(network, weights, f"{key}: {file}", strict)
    return {**info, "file": file}
