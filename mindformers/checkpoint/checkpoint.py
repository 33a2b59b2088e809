"""Run checkpoints: atomic save of weights + optimizer state + run state, listing, pruning and resolving them.
Loading weights into a model is weights.py; resuming a run (the checkpoint to resume, optimizer state) resume.py."""
import json
import os
import re
import shutil
import time
from typing import Dict, Iterable, List, Optional

import numpy as np

from ..tools.rundir import disk_error, pid_alive

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

    Files go to a temporary directory first, are synced, and the directory is renamed into place when complete,
    so a kill during the save never leaves a directory that looks complete; `latest` is then updated. A write
    that fails (a full disk) removes the temporary directory, keeps the previous checkpoint and `latest`, and is
    an OutputDirError naming the checkpoint.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import save_file

    name = f"{prefix}-step{step}"
    final = os.path.join(directory, name)
    tmp = os.path.join(directory, f".{name}.tmp-{os.getpid()}")
    aside = tmp + "-old"  # a checkpoint of the same step saved before, kept until the new one is in place
    try:
        os.makedirs(directory, exist_ok=True)
        remove_stale_temporaries(directory)
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        save_file(weights, os.path.join(tmp, MODEL_FILE), metadata={"format": "mindformers"})
        if opt_state is not None:
            save_file(opt_state, os.path.join(tmp, OPTIMIZER_FILE))
        with open(os.path.join(tmp, STATE_FILE), "w", encoding="utf-8") as f:
            json.dump({"step": step, "time": time.time(), **(state or {})}, f, indent=1, sort_keys=True)
        for file in os.listdir(tmp):
            _fsync(os.path.join(tmp, file))
        if os.path.exists(final):
            os.replace(final, aside)
        os.replace(tmp, final)
        _write_atomic(os.path.join(directory, LATEST), name + "\n")
    except (OSError, SafetensorError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, SafetensorError) and not any(s in str(err) for s in ("IoError", "os error")):
            raise  # not the disk: a bug, with its traceback
        if os.path.isdir(aside) and not os.path.exists(final):  # the new copy did not get there
            os.replace(aside, final)
        shutil.rmtree(aside, ignore_errors=True)
        previous = _latest_name(directory)
        raise disk_error(final, err, "the checkpoint" + (f" (the previous one, {previous}, is complete and "
                                                         f"`latest` still names it)" if previous else "")) from None
    shutil.rmtree(aside, ignore_errors=True)
    return final


def save_checkpoint(directory: str, prefix: str, step: int, network, train_state=None,
                    state: Optional[dict] = None) -> str:
    """Snapshot and write a checkpoint in one call (see `snapshot` and `write_checkpoint`)."""
    return write_checkpoint(directory, prefix, step, *snapshot(network, train_state), state)


def _write_atomic(path: str, text: str):
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _fsync(path: str):
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _latest_name(directory: str) -> Optional[str]:
    try:
        with open(os.path.join(directory, LATEST), encoding="utf-8") as f:
            return f.read().strip() or None
    except OSError:
        return None


_TEMPORARY = re.compile(r"^(\.(?P<name>.+)|latest)\.tmp-(?P<pid>\d+)(?P<aside>-old)?$")


def remove_stale_temporaries(directory: str) -> List[str]:
    """Remove what a save killed part-way (SIGKILL, power loss) left in `directory`: `.<name>.tmp-<pid>`
    directories and `latest.tmp-<pid>` files of processes that no longer run; an older copy set aside for a
    re-save goes back in place if its checkpoint is missing. Returns the names removed."""
    removed = []
    if not os.path.isdir(directory):
        return removed
    for entry in os.listdir(directory):
        match = _TEMPORARY.match(entry)
        if not match or int(match["pid"]) == os.getpid() or pid_alive(int(match["pid"])):
            continue
        path = os.path.join(directory, entry)
        final = os.path.join(directory, match["name"] or "")
        if match["aside"] and match["name"] and not os.path.exists(final):
            os.replace(path, final)
            continue
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)
        removed.append(entry)
    return removed


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
    """Delete the oldest checkpoints beyond `keep` (keep <= 0 keeps all); never the one `latest` names."""
    if keep and keep > 0:
        latest = _latest_name(directory)
        for path in list_checkpoints(directory, prefix)[:-keep]:
            if os.path.basename(path) != latest:
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
