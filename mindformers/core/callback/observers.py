"""Watching a run: TensorBoard scalars, a progress bar on a terminal, and the loss curve as a PNG.

TensorBoard (upstream `tensorboard:` section) writes, on rank 0, one scalar per step for loss, learning rate,
global gradient norm and tokens/s, plus the loss scale (`log_loss_scale_to_tensorboard`), step time
(`log_timers_to_tensorboard`) and eval loss/perplexity whenever eval during training ran. Event files are
written with tensorboardX and read by `tensorboard --logdir <tensorboard_dir>`.
"""
import logging
import os
import sys
import time
from typing import List, Optional

from mindspore.train import Callback

from ...tools.register import MindFormerModuleType, MindFormerRegister
from .callback import _outputs

logger = logging.getLogger("mindformers")


@MindFormerRegister.register(MindFormerModuleType.CALLBACK)
class TensorBoardCallback(Callback):
    """Scalars for TensorBoard under `tensorboard_dir` (rank 0 only)."""

    def __init__(self, tensorboard_dir: str, tensorboard_queue_size: int = 10,
                 log_loss_scale_to_tensorboard: bool = False, log_timers_to_tensorboard: bool = False,
                 log_expert_load_to_tensorboard: bool = False, rank_id: int = 0):
        super().__init__()
        if log_expert_load_to_tensorboard:
            raise ValueError("tensorboard.log_expert_load_to_tensorboard: expert load is not recorded by the MoE "
                             "layer (it computes every expert densely); set it to False")
        self.directory = tensorboard_dir
        self.queue_size = int(tensorboard_queue_size)
        self.log_scale, self.log_timers = bool(log_loss_scale_to_tensorboard), bool(log_timers_to_tensorboard)
        self.rank_id = rank_id
        self.writer = None
        self._start = None
        self._eval_seen = 0

    def on_train_begin(self, run_context):
        if self.rank_id != 0:
            return
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise ImportError("tensorboard.tensorboard_dir needs the tensorboardX package: pip install tensorboardX")
        os.makedirs(self.directory, exist_ok=True)
        self.writer = SummaryWriter(logdir=self.directory, max_queue=self.queue_size)
        logger.info("TensorBoard scalars go to %s (tensorboard --logdir %s)", self.directory, self.directory)

    def on_train_step_begin(self, run_context):
        self._start = time.perf_counter()

    def on_train_step_end(self, run_context):
        if self.writer is None:
            return
        cb = run_context.original_args()
        step = cb.cur_step_num
        seconds = time.perf_counter() - self._start if self._start else 0.0
        loss, _, scale, norm = _outputs(cb.net_outputs)
        self.writer.add_scalar("train/loss", loss, step)
        self.writer.add_scalar("train/learning_rate", float(getattr(cb, "lr", 0.0)), step)
        if norm is not None:
            self.writer.add_scalar("train/grad_norm", norm, step)
        if seconds > 0:
            self.writer.add_scalar("train/tokens_per_second", getattr(cb, "tokens_per_step", 0) / seconds, step)
        if self.log_scale and scale is not None:
            self.writer.add_scalar("train/loss_scale", scale, step)
        if self.log_timers:
            self.writer.add_scalar("timers/step_time_s", seconds, step)
        self._write_evals(cb)
        for name, value in (getattr(cb, "monitor_scalars", None) or {}).items():
            self.writer.add_scalar(name, value, step)

    def _write_evals(self, cb):
        """Eval results the eval-during-training callback added since the last call."""
        for result in (getattr(cb, "eval_results", None) or [])[self._eval_seen:]:
            self.writer.add_scalar("eval/loss", result["loss"], result["step"])
            self.writer.add_scalar("eval/perplexity", result["perplexity"], result["step"])
            self._eval_seen += 1

    def on_train_end(self, run_context):
        if self.writer is not None:
            self._write_evals(run_context.original_args())  # the final eval runs at train end, before this
            self.writer.close()
            self.writer = None


@MindFormerRegister.register(MindFormerModuleType.CALLBACK)
class ProgressBar(Callback):
    """A tqdm bar over the train steps, shown only when stderr is a terminal; log lines print above it."""

    def __init__(self, stream=None, force: bool = False):
        super().__init__()
        self.stream = stream or sys.stderr
        self.force = force
        self.bar = None
        self._redirect = None

    def active(self) -> bool:
        return self.force or (hasattr(self.stream, "isatty") and self.stream.isatty())

    def on_train_begin(self, run_context):
        if not self.active():
            return
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm
        cb = run_context.original_args()
        total = getattr(cb, "total_steps", None) or cb.batch_num * cb.epoch_num
        start = cb.cur_step_num or 0
        self.bar = tqdm(total=total, initial=start, file=self.stream, unit="step", dynamic_ncols=True,
                        desc="train")
        self._redirect = logging_redirect_tqdm(loggers=[logger])
        self._redirect.__enter__()

    def on_train_step_end(self, run_context):
        if self.bar is None:
            return
        loss, _, _, norm = _outputs(run_context.original_args().net_outputs)
        self.bar.set_postfix(loss=f"{loss:.4f}", **({"grad_norm": f"{norm:.3f}"} if norm is not None else {}),
                             refresh=False)
        self.bar.update(1)

    def on_train_end(self, run_context):
        if self.bar is not None:
            self.bar.close()
            self._redirect.__exit__(None, None, None)
            self.bar = self._redirect = None


def plot_loss_curve(history: List[dict], eval_results: Optional[List[dict]], path: str) -> Optional[str]:
    """Train loss (and eval loss, if any) against step as a PNG; returns the path (None without records)."""
    if not history:
        return None
    import matplotlib
    matplotlib.use("Agg", force=True)  # no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    ax.plot([r["step"] for r in history], [r["loss"] for r in history], label="train loss", linewidth=1.2)
    if eval_results:
        ax.plot([r["step"] for r in eval_results], [r["loss"] for r in eval_results], "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"loss {history[0]['loss']:.3f} -> {history[-1]['loss']:.3f} over {len(history)} steps")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


@MindFormerRegister.register(MindFormerModuleType.CALLBACK)
class ProfileCallback(Callback):
    """mindspore.Profiler over steps [profile_start_step, profile_stop_step], written under `output_path`.

    The top-level upstream keys map onto it: profile, profile_start_step, profile_stop_step,
    profile_rank_ids (None = every rank), init_start_profile (start before the first step), profiler_level
    (MindSpore's ProfilerLevel 0-2), profile_output (the directory, else output_dir/profile), profile_memory,
    profile_communication and profile_pipeline (Ascend collections: on another device they stop the run with
    a message instead of being dropped). Analysis runs when profiling stops; open the result with MindStudio
    Insight or read its csv/json (e.g. FRAMEWORK/cpu_op_type_info_0.csv, ASCEND_PROFILER_OUTPUT/trace_view.json).
    """

    def __init__(self, output_path: str, profile_start_step: int = 1, profile_stop_step: int = 10,
                 profile_rank_ids: Optional[List[int]] = None, init_start_profile: bool = False,
                 profile_memory: bool = False, profile_communication: bool = False, profile_pipeline: bool = False,
                 profiler_level: Optional[int] = None, rank_id: int = 0, device_target: str = "CPU"):
        super().__init__()
        if profiler_level not in (None, 0, 1, 2):
            raise ValueError(f"profiler_level: {profiler_level!r} must be 0, 1 or 2 (MindSpore's ProfilerLevel)")
        ascend_only = [k for k, v in (("profile_memory", profile_memory),
                                      ("profile_communication", profile_communication),
                                      ("profile_pipeline", profile_pipeline)) if v]
        if ascend_only and device_target != "Ascend":
            raise ValueError(f"{', '.join(ascend_only)}: MindSpore collects these on Ascend devices only (this run "
                             f"uses {device_target}); set them to False")
        start, stop = int(profile_start_step), int(profile_stop_step)
        if start < 1 or stop < start:
            raise ValueError(f"profile_start_step ({start}) and profile_stop_step ({stop}) must satisfy "
                             f"1 <= start <= stop")
        self.start_step, self.stop_step = (0 if init_start_profile else start), stop
        self.output_path = output_path
        self.enabled = profile_rank_ids is None or rank_id in list(profile_rank_ids)
        # only the Ascend collections that were asked for (passing False for profile_communication warns)
        self.kwargs = {k: True for k, v in (("profile_memory", profile_memory),
                                            ("profile_communication", profile_communication)) if v}
        if profiler_level is not None:
            from mindspore.profiler import ProfilerLevel
            self.kwargs["profiler_level"] = getattr(ProfilerLevel, f"Level{profiler_level}")
        self.profiler = None
        self.done = False

    def _start(self):
        from mindspore.profiler import Profiler
        os.makedirs(self.output_path, exist_ok=True)
        self.profiler = Profiler(output_path=self.output_path, start_profile=False, **self.kwargs)
        self.profiler.start()

    def on_train_begin(self, run_context):
        if self.enabled and self.start_step == 0:
            self._start()

    def on_train_step_begin(self, run_context):
        step = run_context.original_args().cur_step_num
        if self.enabled and self.profiler is None and not self.done and step >= self.start_step > 0:
            self._start()

    def on_train_step_end(self, run_context):
        if self.profiler is not None and run_context.original_args().cur_step_num >= self.stop_step:
            self._finish()

    def on_train_end(self, run_context):
        if self.profiler is not None:
            self._finish()

    def _finish(self):
        self.profiler.stop()
        self.profiler.analyse()
        self.profiler, self.done = None, True
        logger.info("profiler output written under %s", self.output_path)
