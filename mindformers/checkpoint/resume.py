"""Resuming a run: the checkpoint to resume from (a one-process run's, or one step of a semi-auto run's per-rank
checkpoints, checked complete on every rank) and its optimizer state restored exactly. The run state is
checkpoint.read_state, the weights weights.load_weights (both read such a step the same way)."""
import os

from ..parallel.plan import ShardPlan
from .checkpoint import LATEST, OPTIMIZER_FILE, STATE_FILE, list_checkpoints
from .safetensors_io import read_safetensors
from .sharded import STRATEGY_FILE, is_sharded, merge_sharded, rank_step


def find_resume_checkpoint(load_checkpoint: str, resume, by_time: bool = False) -> str:
    """The checkpoint directory to resume from: `resume` names one under `load_checkpoint`, or True = the latest
    (the one `latest` names; with `by_time`, upstream's resume_by_last_timestamp_ckpt, the newest written).

    For a semi-auto run's per-rank checkpoints (`load_checkpoint` holds strategy.json and rank_<r>/) the step is
    picked the same way in rank_0 and must be complete on every rank; rank_0's step directory is returned, and
    loading it merges every rank's slices (sharded.rank_step)."""
    if not load_checkpoint:
        raise ValueError("resume_training needs load_checkpoint: the checkpoint directory of the run to resume "
                         "(e.g. output/checkpoint)")
    found = _pick(os.path.join(load_checkpoint, "rank_0") if is_sharded(load_checkpoint) else load_checkpoint,
                  resume, by_time)
    sharded = rank_step(found)
    if sharded is not None:
        _check_every_rank_holds(*sharded)
    return found


def _pick(directory: str, resume, by_time: bool) -> str:
    if isinstance(resume, str):
        candidate = os.path.join(directory, resume)
        if not os.path.isfile(os.path.join(candidate, STATE_FILE)):
            raise FileNotFoundError(f"resume_training: no complete checkpoint '{resume}' in {directory}")
        return candidate
    if os.path.isfile(os.path.join(directory, STATE_FILE)):
        return directory
    latest = os.path.join(directory, LATEST)
    if by_time:
        found = list_checkpoints(directory)
        if found:
            return max(found, key=lambda d: os.path.getmtime(os.path.join(d, STATE_FILE)))
    if os.path.isfile(latest):
        with open(latest, encoding="utf-8") as f:
            candidate = os.path.join(directory, f.read().strip())
        if os.path.isfile(os.path.join(candidate, STATE_FILE)):
            return candidate
    found = list_checkpoints(directory)
    if not found:
        raise FileNotFoundError(f"resume_training: {directory} holds no complete checkpoint to resume from "
                                f"(set resume_training: False to start a new run)")
    return found[-1]


def _check_every_rank_holds(directory: str, step: str):
    """Every rank of the strategy saved `step` completely: a rank killed mid-save (or never saving) leaves the
    run without its slices of that step."""
    ranks = ShardPlan.load(os.path.join(directory, STRATEGY_FILE)).layout.device_num
    for rank in range(ranks):
        rank_dir = os.path.join(directory, f"rank_{rank}")
        if os.path.isfile(os.path.join(rank_dir, step, STATE_FILE)):
            continue
        held = [os.path.basename(p) for p in list_checkpoints(rank_dir)]
        has = ("does not exist" if not os.path.isdir(rank_dir) else
               f"holds {', '.join(held)}" if held else "holds no complete checkpoint")
        raise FileNotFoundError(f"resume_training: rank_{rank} lacks {step} in {directory} ({rank_dir} {has}; "
                                f"all {ranks} ranks of strategy.json must hold the step resumed)")


def load_train_state(train_state, checkpoint_dir: str, network):
    """Restore optimizer (and loss-scale) state saved with a checkpoint into `train_state`, exactly.

    From one rank's step of a semi-auto run, every rank's slices are merged into whole tensors: set before the
    graph compiles, they are cut to this rank's slices by MindSpore's compile, as the weights are (it slices a
    parameter's data and that of its clones, which the optimizers' states are: core/optim)."""
    import mindspore as ms

    path = os.path.join(checkpoint_dir, OPTIMIZER_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"resume: {path} is missing; the checkpoint was saved without optimizer state "
                                f"(CheckpointMonitor save_optimizer: False) and cannot resume training exactly")
    sharded = rank_step(checkpoint_dir)
    if sharded is not None:
        saved = merge_sharded(*sharded, file=OPTIMIZER_FILE)
        path = f"{path} merged with the other ranks'"
    else:
        saved = read_safetensors(path)
    if getattr(network, "tensor_parallel", None) is not None:  # whole tensors in the file: this rank's slices
        saved = network.tensor_parallel.local_state(saved)
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
