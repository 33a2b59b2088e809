"""monitor_config (upstream section): per-layer gradient norms, weight norms, gradient-norm spikes.

Gradients are grouped by decoder layer (`model.layers.N`) plus `embedding`, `final_norm` and `lm_head` (other
parameters go to `other`), after the `target` regexes (and `invert`) pick the parameters watched. The train
step computes each group's norm inside the compiled graph (one matrix-vector product over the per-parameter
sums of squares it already has), so monitoring costs almost nothing; the group norms' squares add up to the
squared global norm when every parameter is watched.

Keys: monitor_on, target (regex list, default all), invert, step_interval, local_norm_format and
weight_state_format ('log', 'tensorboard' or a list of both; None = off), dump_path (a jsonl of every
monitored step), print_struct (log the parameter table at the start), spike_factor and spike_window (a step
whose global gradient norm exceeds spike_factor x the median of the previous spike_window steps is flagged
with a WARNING and `grad_norm_spike: true`); upstream's check_for_global_norm also flags norms above
global_norm_spike_threshold and stops the run (with a checkpoint) after global_norm_spike_count_threshold of them
in a row. local_loss_format, device_local_loss_format, device_local_norm_format, optimizer_state_format,
throughput_baseline and embedding_size_format are refused with a message: they are not implemented.
"""
import json
import logging
import os
import re
from typing import Dict, List, Optional, Sequence

import numpy as np
from mindspore.train import Callback

from ...tools.register import MindFormerModuleType, MindFormerRegister
from .callback import _outputs

logger = logging.getLogger("mindformers")

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_FORMATS = ("log", "tensorboard")
UNSUPPORTED = ("local_loss_format", "device_local_loss_format", "device_local_norm_format", "optimizer_state_format",
               "throughput_baseline", "embedding_size_format")


def group_of(name: str) -> str:
    """The monitoring group of a parameter name."""
    layer = _LAYER.search(name)
    if layer:
        return f"layer_{int(layer.group(1)):02d}"
    if "embed_tokens" in name or "tok_embeddings" in name:
        return "embedding"
    if name.startswith("lm_head") or name.startswith("output."):
        return "lm_head"
    if name.endswith("model.norm.weight") or name == "norm.weight":
        return "final_norm"
    return "other"


def norm_groups(names: Sequence[str], target: Optional[Sequence[str]] = None, invert: bool = False):
    """(group names, 0/1 matrix groups x parameters) for the parameters picked by target/invert."""
    patterns = [re.compile(p) for p in (target or [".*"])]
    picked = [any(p.search(n) for p in patterns) != bool(invert) for n in names]
    groups = sorted({group_of(n) for n, keep in zip(names, picked) if keep})
    if not groups:
        raise ValueError(f"monitor_config.target {list(target or [])} (invert {invert}) picks no parameter")
    matrix = np.zeros((len(groups), len(names)), np.float32)
    for j, (name, keep) in enumerate(zip(names, picked)):
        if keep:
            matrix[groups.index(group_of(name)), j] = 1.0
    return groups, matrix


def _formats(key: str, value) -> List[str]:
    values = [] if value in (None, False, "") else [value] if isinstance(value, str) else list(value)
    bad = [v for v in values if v not in _FORMATS]
    if bad:
        raise ValueError(f"monitor_config.{key}: {bad} not valid; use 'log', 'tensorboard' or a list of them")
    return values


def is_spike(norm: float, previous: Sequence[float], factor: float, window: int) -> bool:
    """Whether `norm` exceeds `factor` x the median of the last `window` norms (needs at least 3 of them)."""
    recent = [v for v in previous[-window:] if np.isfinite(v)]
    return len(recent) >= 3 and norm > factor * float(np.median(recent))


@MindFormerRegister.register(MindFormerModuleType.CALLBACK)
class TrainingStateMonitor(Callback):
    """Logs the group gradient norms the train step returns (5th output) and flags gradient-norm spikes."""

    def __init__(self, groups: Sequence[str], monitor_on: bool = True, target=None, invert: bool = False,
                 step_interval: int = 1, local_norm_format="log", weight_state_format=None,
                 dump_path: Optional[str] = None, print_struct: bool = False, spike_factor: float = 3.0,
                 spike_window: int = 20, check_for_global_norm: bool = False,
                 global_norm_spike_threshold: float = 1.0, global_norm_spike_count_threshold: int = 10,
                 rank_id: int = 0, **unsupported):
        super().__init__()
        if not monitor_on:
            raise ValueError("monitor_config.monitor_on: False turns the monitor off; the trainer adds this callback "
                             "only when it is True")
        bad = [k for k, v in unsupported.items() if k in UNSUPPORTED and v not in (None, False, "", [])]
        unknown = [k for k in unsupported if k not in UNSUPPORTED]
        if unknown:
            raise ValueError(f"monitor_config: unknown keys {unknown}")
        if bad:
            raise ValueError(f"monitor_config: {bad} are not implemented; remove them (supported: target, invert, "
                             f"step_interval, local_norm_format, weight_state_format, dump_path, print_struct, "
                             f"spike_factor, spike_window)")
        if float(spike_factor) <= 1.0 or int(spike_window) < 3 or int(step_interval) < 1:
            raise ValueError("monitor_config: spike_factor must be > 1, spike_window >= 3 and step_interval >= 1")
        self.groups, self.target, self.invert = list(groups), target, bool(invert)
        self.interval = int(step_interval)
        self.norm_formats = _formats("local_norm_format", local_norm_format)
        self.weight_formats = _formats("weight_state_format", weight_state_format)
        self.dump_path, self.print_struct = dump_path, bool(print_struct)
        self.spike_factor, self.spike_window = float(spike_factor), int(spike_window)
        self.rank_id = rank_id
        # upstream's absolute rule: norms above the threshold count; that many in a row stop the run
        self.check_absolute = bool(check_for_global_norm)
        self.abs_threshold, self.abs_count = float(global_norm_spike_threshold), int(global_norm_spike_count_threshold)
        self.consecutive = 0
        self.norms: List[float] = []
        self.records: List[dict] = []

    def on_train_begin(self, run_context):
        if self.print_struct and self.rank_id == 0:
            net = run_context.original_args().network
            lines = [f"  {p.name:<52} {str(tuple(p.shape)):<16} {group_of(p.name)}" for p in net.get_parameters()]
            logger.info("parameters (name, shape, monitor group):\n%s", "\n".join(lines))

    def on_train_step_end(self, run_context):
        cb = run_context.original_args()
        outputs = cb.net_outputs
        _, _, _, norm = _outputs(outputs)
        spike = norm is not None and is_spike(norm, self.norms, self.spike_factor, self.spike_window)
        if norm is not None:
            self.norms.append(norm)
        step = cb.cur_step_num
        if self.check_absolute and norm is not None:
            self.consecutive = self.consecutive + 1 if norm > self.abs_threshold else 0
            spike = spike or norm > self.abs_threshold
            if self.consecutive >= self.abs_count:
                cb.stop_reason = (f"gradient norm above global_norm_spike_threshold {self.abs_threshold:g} for "
                                  f"{self.consecutive} steps in a row (monitor_config.check_for_global_norm)")
                run_context.request_stop()
        if spike:
            previous = self.norms[-self.spike_window - 1:-1]
            median = f"{float(np.median(previous)):.4g}" if previous else "n/a"
            logger.warning("step %d: gradient norm %.4g is a spike (median of the previous %d steps %s; rule: > %.1f "
                           "x median%s)", step, norm, len(previous), median, self.spike_factor,
                           f" or > {self.abs_threshold:g}" if self.check_absolute else "")
        if step % self.interval and not spike:
            return
        record: Dict[str, object] = {"step": step, "grad_norm": norm, "grad_norm_spike": bool(spike)}
        scalars = {}
        if len(outputs) > 4 and self.norm_formats:
            values = np.asarray(outputs[4].asnumpy(), np.float64).reshape(-1)
            record["local_norm"] = dict(zip(self.groups, values.tolist()))
            scalars.update({f"local_norm/{g}": float(v) for g, v in zip(self.groups, values)})
        if self.weight_formats:
            weights = self._weight_norms(cb.network)
            record["weight_norm"] = weights
            scalars.update({f"weight_norm/{g}": v for g, v in weights.items()})
        cb.monitor_scalars = scalars if "tensorboard" in self.norm_formats + self.weight_formats else {}
        if self.rank_id != 0:
            return
        if "log" in self.norm_formats and "local_norm" in record:
            logger.info("step %d gradient norms: %s", step, ", ".join(f"{g} {v:.4g}" for g, v in
                                                                      record["local_norm"].items()))
        if "log" in self.weight_formats:
            logger.info("step %d weight norms: %s", step, ", ".join(f"{g} {v:.4g}" for g, v in
                                                                    record["weight_norm"].items()))
        self.records.append(record)
        if self.dump_path:
            os.makedirs(os.path.dirname(os.path.abspath(self.dump_path)), exist_ok=True)
            with open(self.dump_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def _weight_norms(self, network) -> Dict[str, float]:
        sums: Dict[str, float] = {}
        patterns = [re.compile(p) for p in (self.target or [".*"])]
        for p in network.get_parameters():
            if any(r.search(p.name) for r in patterns) != self.invert:
                sums[group_of(p.name)] = sums.get(group_of(p.name), 0.0) + float(np.square(
                    p.asnumpy().astype(np.float64)).sum())
        return {g: float(np.sqrt(v)) for g, v in sorted(sums.items())}
