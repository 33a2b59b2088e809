"""Run checkpoints: atomic save of weights + optimizer state + run state, finding the one to resume, restoring
optimizer state. Loading weights into a model is weights.py."""
import json
import os
import shutil
import time
from typing import Dict, Iterable, Optional

import numpy as np

from .safetensors_io import read_safetensors

LATEST = "latest"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"


def _to_numpy(params: Iterable, copy: bool = False) -> Dict[str, np.ndarray]:
    # asnumpy() may share the device buffer, which the optimizer updates in place: copy when the
    # arrays must outlive the next step (async save)
    return {p.name: np.array(p.asnumpy(), copy=True) if copy else np.ascontiguousarray(p.asnumpy())
            for p in params}


def snapshot(network, train_state=None, copy: bool = False):
    """Copies of the network's weights and of `train_state`'s own parameters, as numpy arrays.

    `train_state` is the cell holding the optimizer state (the optimizer, or the whole train step, whose
    loss-scale parameters then come along); the network's parameters it also holds are left out.
    """
    weights = _to_numpy(network.get_parameters(), copy)
    opt_state = None
    if train_state is not None:
        names = set(weights)
        opt_state = _to_numpy((p for p in train_state.get_parameters() if p.name not in names), copy)
    return weights, opt_state


def write_checkpoint(directory: str, prefix: str, step: int, weights: Dict[str, np.ndarray],
                     opt_state: Optional[Dict[str, np.ndarray]] = None, state: Optional[dict] = None) -> str:
    """Write `<directory>/<prefix>-step<step>/` (model, optimizer and state files) from a snapshot.

    Files go to a temporary directory first and are renamed into place when complete, so a kill
    during the save never leaves a directory that looks complete; `latest` is then updated.
    """
    from safetensors.numpy import save_file

    os.makedirs(directory, exist_ok=True)
    name = f"{prefix}-step{step}"
    final = os.path.join(directory, name)
    tmp = os.path.join(directory, f".{name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    save_file(weights, os.path.join(tmp, MODEL_FILE), metadata={"format": "mindformers"})
    if opt_state is not None:
        save_file(opt_state, os.path.join(tmp, OPTIMIZER_FILE))
    with open(os.path.join(tmp, STATE_FILE), "w", encoding="utf-8") as f:
        json.dump({"step": step, "time": time.time(), **(state or {})}, f, indent=1, sort_keys=True)
    if os.path.exists(final):
        shutil.rmtree(final)
    os.replace(tmp, final)
    _write_atomic(os.path.join(directory, LATEST), name + "\n")
    return final


def save_checkpoint(directory: str, prefix: str, step: int, network, train_state=None,
                    state: Optional[dict] = None) -> str:
    """Snapshot and write a checkpoint in one call (see `snapshot` and `write_checkpoint`)."""
    return write_checkpoint(directory, prefix, step, *snapshot(network, train_state), state)


def _write_atomic(path: str, text: str):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def list_checkpoints(directory: str, prefix: Optional[str] = None):
    """Complete checkpoint directories under `directory`, oldest step first."""
    if not os.path.isdir(directory):
        return []
    found = []
    for name in os.listdir(directory):
        full = os.path.join(directory, name)
        if name.startswith(".") or not os.path.isfile(os.path.join(full, STATE_FILE)):
            continue
        if prefix and not name.startswith(prefix + "-step"):
            continue
        try:
            step = int(name.rsplit("-step", 1)[1])
        except (IndexError, ValueError):
            continue
        found.append((step, full))
    return [path for _, path in sorted(found)]


def prune_checkpoints(directory: str, prefix: str, keep: int):
    """Delete the oldest checkpoints beyond `keep` (keep <= 0 keeps all)."""
    if keep and keep > 0:
        for path in list_checkpoints(directory, prefix)[:-keep]:
            shutil.rmtree(path, ignore_errors=True)


def resolve_checkpoint(path: str, key: str = "load_checkpoint") -> str:
    """Turn a checkpoint directory, a `latest`-holding parent, or a weights file into a weights file; errors name
    the config `key` that gave the path."""
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{key}: '{path}' does not exist")
    if os.path.isfile(os.path.join(path, MODEL_FILE)):
        return os.path.join(path, MODEL_FILE)
    latest = os.path.join(path, LATEST)
    if os.path.isfile(latest):
        with open(latest, encoding="utf-8") as f:
            return resolve_checkpoint(os.path.join(path, f.read().strip()), key)
    ckpts = list_checkpoints(path)
    if ckpts:
        return os.path.join(ckpts[-1], MODEL_FILE)
    raise FileNotFoundError(f"{key}: '{path}' holds no checkpoint "
                            f"(expected {MODEL_FILE}, a '{LATEST}' file or <prefix>-step<N>/ directories)")


def read_state(checkpoint_dir: str) -> dict:
    """The run state (step, epoch, consumed samples, ...) saved with a checkpoint directory."""
    path = os.path.join(checkpoint_dir, STATE_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"resume: {path} is missing or unreadable ({e})") from None


def find_resume_checkpoint(load_checkpoint: str, resume, by_time: bool = False) -> str:
    """The checkpoint directory to resume from: `resume` names one under `load_checkpoint`, or True = the latest
    (the one `latest` names; with `by_time`, upstream's resume_by_last_timestamp_ckpt, the newest written)."""
    if not load_checkpoint:
        raise ValueError("resume_training needs load_checkpoint: the checkpoint directory of the run to resume "
                         "(e.g. output/checkpoint)")
    if isinstance(resume, str):
        candidate = os.path.join(load_checkpoint, resume)
        if not os.path.isfile(os.path.join(candidate, STATE_FILE)):
            raise FileNotFoundError(f"resume_training: no complete checkpoint '{resume}' in {load_checkpoint}")
        return candidate
    if os.path.isfile(os.path.join(load_checkpoint, STATE_FILE)):
        return load_checkpoint
    latest = os.path.join(load_checkpoint, LATEST)
    if by_time:
        found = list_checkpoints(load_checkpoint)
        if found:
            return max(found, key=lambda d: os.path.getmtime(os.path.join(d, STATE_FILE)))
    if os.path.isfile(latest):
        with open(latest, encoding="utf-8") as f:
            candidate = os.path.join(load_checkpoint, f.read().strip())
        if os.path.isfile(os.path.join(candidate, STATE_FILE)):
            return candidate
    found = list_checkpoints(load_checkpoint)
    if not found:
        raise FileNotFoundError(f"resume_training: {load_checkpoint} holds no complete checkpoint to resume from "
                                f"(set resume_training: False to start a new run)")
    return found[-1]


def load_train_state(train_state, checkpoint_dir: str, network):
    """Restore optimizer (and loss-scale) state saved by save_checkpoint into `train_state`, exactly."""
    import mindspore as ms

    path = os.path.join(checkpoint_dir, OPTIMIZER_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"resume: {path} is missing; the checkpoint was saved without optimizer state "
                                f"(CheckpointMonitor save_optimizer: False) and cannot resume training exactly")
    saved = read_safetensors(path)
    weights = {p.name for p in network.get_parameters()}
    own = {p.name: p for p in train_state.get_parameters() if p.name not in weights}
    missing = sorted(set(own) - set(saved))
    unexpected = sorted(set(saved) - set(own))
    if missing or unexpected:
        raise ValueError(f"resume: {path} does not fit this optimizer/train step: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]} (was the optimizer or runner_wrapper changed?)")
    for name, param in own.items():
        value = saved[name]
        if value.size != param.size:
            raise ValueError(f"resume: {name} has shape {value.shape} in {path} but {param.shape} here")
        # scalars may come back as shape (1,): same data
        value = value.reshape(param.shape).astype(ms.dtype_to_nptype(param.dtype), copy=False)
        param.set_data(ms.Tensor(value))
