"""Training callbacks (upstream names): loss/throughput/MFU logging and checkpoint saving.

They are MindSpore `Callback`s; the trainer fills `run_context.original_args()` with cur_step_num,
cur_epoch_num, batch_num, epoch_num, net_outputs, network, optimizer, lr, tokens_per_step,
flops_per_token and output_dir, so users' own MindSpore callbacks work too.
"""
import errno
import json
import logging
import os
import threading
import time
from typing import Optional

import numpy as np
from mindspore.train import Callback

from ...checkpoint import prune_checkpoints, snapshot, write_checkpoint
from ...checkpoint.sharded import rank_slices, save_rank_checkpoint
from ...parallel.semi_auto import gather_optimizer_shards
from ...tools.refuse import refuse_unsupported
from ...tools.register import MindFormerModuleType, MindFormerRegister
from ...tools.rundir import OutputDirError, disk_error

logger = logging.getLogger("mindformers")

# Peak dense FLOP/s per device used for MFU when the device is an accelerator (vendor figures).
ACCELERATOR_PEAK_FLOPS = {"Ascend": 313e12, "GPU": 312e12}  # Ascend 910B bf16; A100 bf16


class CallbackParams(dict):
    """What callbacks read from `run_context.original_args()`: a dict with attribute access."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key, value):
        self[key] = value


def measure_cpu_peak_flops(size: int = 1024, repeats: int = 5) -> float:
    """Best fp32 GEMM FLOP/s numpy reaches on this CPU right now."""
    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    best = float("inf")
    a @ a  # warm up the BLAS threads
    for _ in range(repeats):
        start = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best


def nominal_cpu_peak_flops() -> float:
    """cores x clock x fp32 FLOPs per cycle from /proc/cpuinfo (0 when it can't be read).

    FLOPs per cycle: two FMA pipes of the widest vector unit (AVX-512 on Intel: 64; AMD Zen 4 runs
    AVX-512 on 256-bit pipes, and AVX2+FMA parts: 32; otherwise SSE: 8).
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            info = f.read()
    except OSError:
        return 0.0
    mhz = [float(line.split(":")[1]) for line in info.splitlines() if line.startswith("cpu MHz")]
    flags = next((line for line in info.splitlines() if line.startswith("flags")), "").split()
    if not mhz:
        return 0.0
    if "avx512f" in flags and "AuthenticAMD" not in info:
        per_cycle = 64
    elif "fma" in flags and "avx2" in flags:
        per_cycle = 32
    else:
        per_cycle = 8
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return cores * max(mhz) * 1e6 * per_cycle


def cpu_peak_flops():
    """The MFU denominator on CPU and how it was found.

    The larger of the nominal peak (clock from /proc/cpuinfo is often the base clock, below turbo) and a
    measured GEMM rate (which a busy machine lowers), so MFU errs low, not above 100%.
    """
    nominal, measured = nominal_cpu_peak_flops(), measure_cpu_peak_flops()
    if nominal >= measured:
        return nominal, f"nominal fp32 peak from /proc/cpuinfo; a numpy GEMM reached {measured / 1e9:.0f} GFLOP/s"
    return measured, f"measured fp32 GEMM; nominal from /proc/cpuinfo {nominal / 1e9:.0f} GFLOP/s"


def _outputs(net_outputs):
    """(loss, overflow, loss_scale, global_norm) from the wrapper's outputs (a loss alone is fine)."""
    if not isinstance(net_outputs, (tuple, list)):
        net_outputs = (net_outputs,)
    vals = [float(np.asarray(o.asnumpy() if hasattr(o, "asnumpy") else o)) for o in net_outputs[:4]]
    loss = vals[0]
    overflow = bool(vals[1]) if len(vals) > 1 else False
    scale = vals[2] if len(vals) > 2 else None
    norm = vals[3] if len(vals) > 3 else None
    return loss, overflow, scale, norm


def _fmt_time(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


@MindFormerRegister.register(MindFormerModuleType.CALLBACK)
class MFLossMonitor(Callback):
    """Logs step, loss, lr, grad norm, tokens/s, MFU (peak stated) and ETA; writes train_metrics.jsonl."""

    def __init__(self, learning_rate=None, per_print_times: int = 1, micro_batch_num: int = 1,
                 micro_batch_interleave_num: int = 1, origin_epochs: Optional[int] = None,
                 dataset_size: Optional[int] = None, initial_epoch: int = 0, initial_step: int = 0,
                 global_batch_size: int = 0, gradient_accumulation_steps: int = 1,
                 check_for_nan_in_loss_and_grad: bool = False, calculate_per_token_loss: bool = False,
                 print_separate_loss: bool = False, peak_flops: Optional[float] = None,
                 metrics_file: Optional[str] = None):
        super().__init__()
        derived = "derived from the run itself"
        refuse_unsupported("MFLossMonitor", {
            "learning_rate": (learning_rate, None, "the logged learning rate is read from the run's schedule"),
            "micro_batch_num": (micro_batch_num, 1, derived), "origin_epochs": (origin_epochs, None, derived),
            "micro_batch_interleave_num": (micro_batch_interleave_num, 1, derived),
            "dataset_size": (dataset_size, None, derived), "initial_epoch": (initial_epoch, 0, derived),
            "global_batch_size": (global_batch_size, 0, derived),
            "gradient_accumulation_steps": (gradient_accumulation_steps, 1, derived),
            "calculate_per_token_loss": (calculate_per_token_loss, False, "the logged loss is the step's loss"),
            "print_separate_loss": (print_separate_loss, False, "the step has one loss to print")})
        self.per_print_times = max(1, int(per_print_times))
        self.check_for_nan = check_for_nan_in_loss_and_grad
        self.peak_flops = peak_flops
        self.metrics_file = metrics_file
        self.initial_step = initial_step
        self._step_start = None
        self._run_start = None
        self._steps_timed = 0
        self._timed_total = 0.0
        self.history = []
        self.skipped_steps = 0

    def on_train_begin(self, run_context):
        cb = run_context.original_args()
        if self.peak_flops is None:
            device = getattr(cb, "device_target", "CPU")
            if device in ACCELERATOR_PEAK_FLOPS:
                self.peak_flops, self._peak_note = ACCELERATOR_PEAK_FLOPS[device], f"{device} spec"
            else:
                self.peak_flops, self._peak_note = cpu_peak_flops()
        else:
            self._peak_note = "configured"
        # ranks of a data-parallel job log the same steps: only rank 0 writes the shared metrics file
        if self.metrics_file is None and getattr(cb, "output_dir", None) and getattr(cb, "rank_id", 0) == 0:
            self.metrics_file = os.path.join(cb.output_dir, "log", "train_metrics.jsonl")
        if self.metrics_file:
            os.makedirs(os.path.dirname(self.metrics_file) or ".", exist_ok=True)
        logger.info("MFU is measured against a peak of %.3g TFLOP/s (%s)", self.peak_flops / 1e12, self._peak_note)
        self._run_start = time.perf_counter()

    def on_train_step_begin(self, run_context):
        self._step_start = time.perf_counter()

    def on_train_step_end(self, run_context):
        cb = run_context.original_args()
        step_time = time.perf_counter() - self._step_start
        loss, overflow, scale, norm = _outputs(cb.net_outputs)
        if overflow or not np.isfinite(loss):
            # the train step skipped the update: count it, or stop (weights are still the last good ones)
            self.skipped_steps += 1
            if self.check_for_nan:
                cb.stop_reason = (f"loss {loss} / non-finite gradients at step {cb.cur_step_num}; stopped by "
                                  f"check_for_nan_in_loss_and_grad (the saved checkpoint holds the weights "
                                  f"before this step)")
                run_context.request_stop()
        tokens = getattr(cb, "tokens_per_step", 0)
        tokens_per_s = tokens / step_time if step_time > 0 else 0.0
        flops = getattr(cb, "flops_per_token", 0) * tokens_per_s
        mfu = flops / self.peak_flops if self.peak_flops else 0.0
        total = getattr(cb, "total_steps", None) or cb.batch_num * cb.epoch_num
        # the first step compiles the graph: leave it out of the ETA estimate
        if cb.cur_step_num > self.initial_step + 1:
            self._steps_timed += 1
            self._timed_total += step_time
        mean_step = self._timed_total / self._steps_timed if self._steps_timed else step_time
        elapsed = time.perf_counter() - self._run_start
        eta = mean_step * (total - cb.cur_step_num)
        record = {"step": cb.cur_step_num, "epoch": cb.cur_epoch_num, "loss": loss,
                  "lr": float(getattr(cb, "lr", 0.0)), "grad_norm": norm, "overflow": overflow,
                  "loss_scale": scale, "step_time_s": step_time, "tokens_per_s": tokens_per_s, "mfu": mfu,
                  "elapsed_s": elapsed}
        self.history.append(record)
        if self.metrics_file:
            self._append(json.dumps(record) + "\n")
        if cb.cur_step_num % self.per_print_times == 0 or cb.cur_step_num == total:
            parts = [f"step {cb.cur_step_num}/{total}", f"epoch {cb.cur_epoch_num}/{cb.epoch_num}",
                     f"loss {loss:.4f}", f"lr {record['lr']:.3e}"]
            if norm is not None:
                parts.append(f"grad_norm {norm:.3f}")
            if overflow:
                parts.append(f"overflow (loss_scale {scale:g}), step skipped ({self.skipped_steps} so far)")
            parts += [f"{tokens_per_s:,.0f} tokens/s", f"MFU {100 * mfu:.2f}%",
                      f"{1000 * step_time:.0f} ms/step", f"ETA {_fmt_time(eta)}"]
            logger.info(" | ".join(parts))

    def _append(self, line: str):
        """One record as one append-mode write of a whole line: a reader (or a crash) sees only whole records."""
        try:
            fd = os.open(self.metrics_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                data = line.encode("utf-8")
                if os.write(fd, data) != len(data):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            finally:
                os.close(fd)
        except OSError as err:
            raise disk_error(self.metrics_file, err, "the training metrics") from None

    def on_train_end(self, run_context):
        if self.history:
            steady = [r for r in self.history[1:]] or self.history
            tps = sum(r["tokens_per_s"] for r in steady) / len(steady)
            logger.info("trained %d steps in %s; mean %.0f tokens/s after the first step, MFU %.2f%% of %.3g "
                        "TFLOP/s (%s); loss %.4f -> %.4f", len(self.history),
                        _fmt_time(time.perf_counter() - self._run_start), tps,
                        100 * sum(r["mfu"] for r in steady) / len(steady), self.peak_flops / 1e12,
                        self._peak_note, self.history[0]["loss"], self.history[-1]["loss"])
        if self.skipped_steps:
            logger.warning("%d steps were skipped for non-finite loss or gradients", self.skipped_steps)


@MindFormerRegister.register(MindFormerModuleType.CALLBACK)
class CheckpointMonitor(Callback):
    """Saves `<directory>/<prefix>-step<N>/` (safetensors) every save_checkpoint_steps and at the end; under semi-auto
    parallel every rank saves its slices as `<directory>/rank_<r>/<prefix>-step<N>/` beside `<directory>/strategy.json`
    (checkpoint/sharded.py), a directory load_checkpoint merges."""

    def __init__(self, prefix: str = "mindformers", directory: Optional[str] = None,
                 save_checkpoint_steps: int = 1000, save_checkpoint_seconds: int = 0,
                 keep_checkpoint_max: int = 5, keep_checkpoint_per_n_minutes: int = 0,
                 integrated_save: bool = True, save_network_params: bool = False,
                 save_trainable_params: bool = False, async_save: bool = False, saved_network=None,
                 append_info=None, enc_key=None, enc_mode: str = "AES-GCM", exception_save: bool = False,
                 remove_redundancy: bool = False, checkpoint_format: str = "safetensors",
                 global_batch_size: int = 0, save_optimizer: bool = True, save_at_end: bool = True):
        super().__init__()
        if checkpoint_format != "safetensors":
            raise ValueError(f"CheckpointMonitor.checkpoint_format: '{checkpoint_format}' is not supported; "
                             f"use 'safetensors'")
        no = "not supported here"
        refuse_unsupported("CheckpointMonitor", {
            "enc_key": (enc_key, None, "encrypted checkpoints are " + no),
            "enc_mode": (enc_mode, "AES-GCM", "encrypted checkpoints are " + no),
            "keep_checkpoint_per_n_minutes": (keep_checkpoint_per_n_minutes, 0, "time-based retention is " + no
                                              + "; use keep_checkpoint_max"),
            "save_network_params": (save_network_params, False, "a separate weights-only copy is " + no
                                    + "; model.safetensors holds the weights"),
            "save_trainable_params": (save_trainable_params, False, "a trainable-only copy is " + no
                                      + " (LoRA adapters are saved under output_dir/adapter)"),
            "saved_network": (saved_network, None, "the trained network is saved"),
            "append_info": (append_info, None, "extra entries in the checkpoint are " + no),
            "exception_save": (exception_save, False, "saving on an exception is " + no
                               + " (SIGTERM saves after the current step)"),
            "remove_redundancy": (remove_redundancy, False, "rank 0 writes the one copy"),
            "global_batch_size": (global_batch_size, 0, "derived from the run itself")})
        self.prefix = prefix
        self.directory = directory
        self.save_steps = int(save_checkpoint_steps or 0)
        self.save_seconds = int(save_checkpoint_seconds or 0)
        self.keep_max = int(keep_checkpoint_max or 0)
        self.save_optimizer = save_optimizer
        self.save_at_end = save_at_end
        # integrated_save (upstream): True = one checkpoint written by rank 0 (data-parallel ranks hold the same
        # weights); False = every rank writes its own under <directory>/rank_<r>/
        self.integrated_save = bool(integrated_save)
        # async: the step only pays for copying the parameters; files are written by a background thread
        self.async_save = bool(async_save)
        self._writer: Optional[threading.Thread] = None
        self._failed: Optional[OutputDirError] = None
        self._last_saved_step = None
        self._last_save_time = time.time()
        self.saved = []

    def _directory(self, cb, plan=None) -> str:
        directory = self.directory or os.path.join(getattr(cb, "output_dir", "./output"), "checkpoint")
        if plan is not None or self.integrated_save:  # semi-auto: save_rank_checkpoint adds rank_<r>/ itself
            return directory
        return os.path.join(directory, f"rank_{getattr(cb, 'rank_id', 0)}")

    def _save(self, cb):
        # tensor parallel (parallel/tensor_parallel.py): every rank sends its slices, the checkpoint holds whole tensors
        tensor_parallel = getattr(cb.network, "tensor_parallel", None)
        # semi-auto parallel (parallel/apply.py): each rank holds slices of its stage; every rank saves its own part
        plan = getattr(cb.network, "shard_plan", None)
        rank = getattr(cb, "rank_id", 0)
        if self.integrated_save and rank != 0 and tensor_parallel is None and plan is None:
            return  # data-parallel ranks hold identical weights: rank 0 writes
        step = cb.cur_step_num
        state = {"epoch": cb.cur_epoch_num, "consumed_samples": getattr(cb, "consumed_samples", None),
                 "config_hash": getattr(cb, "config_hash", None), "model": getattr(cb, "model_section", None),
                 "loss": _outputs(cb.net_outputs)[0]}
        train_state = getattr(cb, "train_network", None) or getattr(cb, "optimizer", None)
        weights, opt_state = snapshot(cb.network, train_state if self.save_optimizer else None, copy=self.async_save)
        self._last_saved_step, self._last_save_time = step, time.time()
        if tensor_parallel is not None:
            weights, opt_state = tensor_parallel.full_state(weights), tensor_parallel.full_state(opt_state)
            if self.integrated_save and rank != 0:
                return
        if plan is not None:
            weights, opt_state = self._rank_part(train_state, plan, rank, weights, opt_state)
        directory = self._directory(cb, plan)
        self.wait()  # one write at a time, in step order
        args = (directory, step, weights, opt_state, state, plan, rank)
        if self.async_save:
            self._writer = threading.Thread(target=self._write, args=args, name=f"checkpoint-step{step}", daemon=False)
            self._writer.start()
        else:
            self._write(*args)

    @staticmethod
    def _rank_part(train_state, plan, rank, weights, opt_state):
        """This rank's slices as the plan cuts them (shape errors raised here, on the training thread); slices
        MindSpore's parallel optimizer split further are gathered first (collective over its groups)."""
        import mindspore as ms
        if ms.get_auto_parallel_context("enable_parallel_optimizer") and train_state is not None:
            weights = gather_optimizer_shards(train_state, weights)
            opt_state = None if opt_state is None else gather_optimizer_shards(train_state, opt_state)
        return (rank_slices(weights, plan, rank),
                None if opt_state is None else rank_slices(opt_state, plan, rank, "optimizer state"))

    def _write(self, directory, step, weights, opt_state, state, plan=None, rank=0):
        try:
            if plan is None:
                path = write_checkpoint(directory, self.prefix, step, weights, opt_state, state)
            else:
                path = save_rank_checkpoint(directory, self.prefix, step, rank, plan, weights, opt_state, state,
                                            _ms_strategy_file())
                directory = os.path.join(directory, f"rank_{rank}")
        except OutputDirError as err:
            if not self.async_save:
                raise
            self._failed = err  # raised on the training thread by wait()
            return
        prune_checkpoints(directory, self.prefix, self.keep_max)
        self.saved.append(path)
        logger.info("saved checkpoint %s", path)

    def wait(self):
        """Block until a background write (async_save) has finished; a write that failed is raised here."""
        if self._writer is not None:
            self._writer.join()
            self._writer = None
        failed, self._failed = self._failed, None
        if failed is not None:
            raise failed

    def on_train_begin(self, run_context):
        network = run_context.original_args().network
        sharded = any(getattr(network, key, None) is not None for key in ("tensor_parallel", "shard_plan"))
        if self.save_seconds and sharded:
            raise ValueError("CheckpointMonitor.save_checkpoint_seconds: under model_parallel > 1 or semi-auto "
                             "parallel every rank takes part in a save, and clocks would pick different steps; use "
                             "save_checkpoint_steps")

    def on_train_step_end(self, run_context):
        cb = run_context.original_args()
        due_steps = self.save_steps and cb.cur_step_num % self.save_steps == 0
        due_time = self.save_seconds and time.time() - self._last_save_time >= self.save_seconds
        if due_steps or due_time:
            self._save(cb)

    def on_train_end(self, run_context):
        cb = run_context.original_args()
        if self.save_at_end and cb.cur_step_num and cb.cur_step_num != self._last_saved_step:
            self._save(cb)
        self.wait()


def _ms_strategy_file() -> Optional[str]:
    """The strategy file MindSpore writes at compile under semi-auto parallel (parallel.strategy_ckpt_config or
    strategy_ckpt_save_file), if any."""
    import mindspore as ms
    try:
        return (ms.get_auto_parallel_context("strategy_ckpt_config") or {}).get("save_file") or None
    except (ValueError, RuntimeError, AttributeError):
        return None
