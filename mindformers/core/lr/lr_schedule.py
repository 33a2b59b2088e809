"""Learning-rate schedules with a linear warm-up (upstream names and YAML keys).

Every schedule maps the optimizer's global step (0 for the first update) to a learning rate:
warm-up goes linearly from `warmup_lr_init` to `learning_rate` over `warmup_steps`, then the
schedule's own shape takes over. `construct` runs inside a compiled train step; `value(step)`
evaluates the same graph eagerly for logging and tests.
"""
import math
from typing import Optional

import mindspore as ms
from mindspore import Tensor, ops
from mindspore.nn.learning_rate_schedule import LearningRateSchedule

from mindformers.tools.register import MindFormerModuleType, MindFormerRegister

__all__ = ["ConstantWarmUpLR", "LinearWithWarmUpLR", "CosineWithWarmUpLR", "CosineWithRestartsAndWarmUpLR",
           "PolynomialWithWarmUpLR", "WarmUpStableDecayLR"]


def _check_total_steps(name: str, total_steps, why: str) -> int:
    if total_steps is None or total_steps == -1:
        raise ValueError(
            f"{name}: total_steps is {total_steps} but {why}; set lr_schedule.total_steps to a positive step "
            f"count (the trainer resolves -1 from the dataset size before building the schedule)")
    if int(total_steps) <= 0:
        raise ValueError(f"{name}: total_steps must be a positive integer, got {total_steps}")
    return int(total_steps)


def _steps_from(name: str, steps_key: str, steps, ratio_key: str, ratio, total_steps) -> Optional[int]:
    """Resolve a step count given either directly or as a ratio of total_steps (not both)."""
    if steps is not None and ratio is not None:
        raise ValueError(f"{name}: set either {steps_key} ({steps}) or {ratio_key} ({ratio}), not both")
    if ratio is not None:
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"{name}: {ratio_key} must be in [0, 1], got {ratio}")
        total = _check_total_steps(name, total_steps, f"{ratio_key} is a fraction of it")
        return int(total * ratio)
    if steps is not None and int(steps) < 0:
        raise ValueError(f"{name}: {steps_key} must be >= 0, got {steps}")
    return None if steps is None else int(steps)


class _WarmUpLR(LearningRateSchedule):
    """Shared warm-up phase; each subclass defines `_after_warmup(step)`, the rate once warm-up is over."""

    def __init__(self, learning_rate: float, warmup_steps: Optional[int], warmup_lr_init: float,
                 warmup_ratio: Optional[float], total_steps: Optional[int]):
        super().__init__()
        name = type(self).__name__
        if learning_rate < 0:
            raise ValueError(f"{name}: learning_rate must be >= 0, got {learning_rate}")
        self.learning_rate = float(learning_rate)
        self.warmup_lr_init = float(warmup_lr_init)
        self.warmup_steps = _steps_from(name, "warmup_steps", warmup_steps, "warmup_ratio", warmup_ratio,
                                        total_steps) or 0
        self.total_steps = None if total_steps in (None, -1) else int(total_steps)
        # Divide by at least 1 so a zero-step warm-up never divides by zero (its branch is unused then).
        self._warmup_div = float(max(self.warmup_steps, 1))

    def construct(self, global_step: Tensor) -> Tensor:
        """Learning rate for `global_step` (a scalar or 1-element integer Tensor)."""
        step = ops.cast(global_step, ms.float32).reshape(())
        warm = self.warmup_lr_init + (self.learning_rate - self.warmup_lr_init) * step / self._warmup_div
        return ops.select(step < self.warmup_steps, warm, self._after_warmup(step))

    def value(self, step: int) -> float:
        """Learning rate at `step` as a Python float (for logging and tests)."""
        # Called as a Cell: in GRAPH mode (training) it compiles once and then costs ~0.5 ms a call, where the
        # op-by-op construct took 5-12 ms, paid on every training step for the log line
        return float(self(Tensor(step, ms.int32)).asnumpy())

    def _progress(self, step: Tensor, start: int, length: int) -> Tensor:
        """Fraction of [start, start + length) elapsed at `step`, clipped to [0, 1]."""
        return ops.clip_by_value((step - start) / float(max(length, 1)), 0.0, 1.0)


@MindFormerRegister.register(MindFormerModuleType.LR)
class ConstantWarmUpLR(_WarmUpLR):
    """Linear warm-up, then a constant `learning_rate`."""

    def __init__(self, learning_rate: float, warmup_steps: Optional[int] = None, warmup_lr_init: float = 0.,
                 warmup_ratio: Optional[float] = None, total_steps: Optional[int] = None):
        super().__init__(learning_rate, warmup_steps, warmup_lr_init, warmup_ratio, total_steps)

    def _after_warmup(self, step: Tensor) -> Tensor:
        return ops.full_like(step, self.learning_rate)


@MindFormerRegister.register(MindFormerModuleType.LR)
class LinearWithWarmUpLR(_WarmUpLR):
    """Linear warm-up, then linear decay to `lr_end` at `total_steps`.

    lr(t) = lr - (lr - lr_end) * (t - warmup_steps) / (total_steps - warmup_steps), held at lr_end after.
    """

    def __init__(self, learning_rate: float, total_steps: Optional[int] = None, warmup_steps: Optional[int] = None,
                 warmup_lr_init: float = 0., warmup_ratio: Optional[float] = None, lr_end: float = 0.):
        super().__init__(learning_rate, warmup_steps, warmup_lr_init, warmup_ratio, total_steps)
        self.total_steps = _check_total_steps(type(self).__name__, total_steps, "the decay needs it")
        self.lr_end = float(lr_end)

    def _after_warmup(self, step: Tensor) -> Tensor:
        progress = self._progress(step, self.warmup_steps, self.total_steps - self.warmup_steps)
        return self.learning_rate - (self.learning_rate - self.lr_end) * progress


def _decay_steps(name: str, decay_steps, decay_ratio, total_steps: int, warmup_steps: int) -> int:
    """Decay length: decay_steps, or decay_ratio * total_steps, or whatever follows the warm-up."""
    steps = _steps_from(name, "decay_steps", decay_steps, "decay_ratio", decay_ratio, total_steps)
    if steps is None:
        steps = total_steps - warmup_steps
    if steps <= 0:
        raise ValueError(f"{name}: the decay phase has {steps} steps (total_steps={total_steps}, "
                         f"warmup_steps={warmup_steps}); make total_steps larger than warmup_steps")
    return steps


@MindFormerRegister.register(MindFormerModuleType.LR)
class CosineWithWarmUpLR(_WarmUpLR):
    """Linear warm-up, then cosine decay from `learning_rate` to `lr_end`.

    With p = (t - warmup_steps) / decay_steps clipped to [0, 1]:
    lr(t) = lr_end + 0.5 * (lr - lr_end) * (1 + cos(2 * pi * num_cycles * p)); num_cycles=0.5 is one half-wave.
    decay_steps defaults to total_steps - warmup_steps (or decay_ratio * total_steps).
    """

    def __init__(self, learning_rate: float, warmup_steps: Optional[int] = None, total_steps: Optional[int] = None,
                 num_cycles: float = 0.5, lr_end: float = 0., warmup_lr_init: float = 0.,
                 warmup_ratio: Optional[float] = None, decay_steps: Optional[int] = None,
                 decay_ratio: Optional[float] = None):
        super().__init__(learning_rate, warmup_steps, warmup_lr_init, warmup_ratio, total_steps)
        name = type(self).__name__
        if decay_steps is None:
            total = _check_total_steps(name, total_steps, "the cosine decay length comes from it")
        else:
            total = self.total_steps
        self.decay_steps = _decay_steps(name, decay_steps, decay_ratio, total, self.warmup_steps)
        self.num_cycles = float(num_cycles)
        self.lr_end = float(lr_end)

    def _after_warmup(self, step: Tensor) -> Tensor:
        progress = self._progress(step, self.warmup_steps, self.decay_steps)
        cosine = 0.5 * (1.0 + ops.cos(2.0 * math.pi * self.num_cycles * progress))
        return self.lr_end + (self.learning_rate - self.lr_end) * cosine


@MindFormerRegister.register(MindFormerModuleType.LR)
class CosineWithRestartsAndWarmUpLR(CosineWithWarmUpLR):
    """Linear warm-up, then `num_cycles` cosine decays from `learning_rate` to `lr_end`, each a hard restart.

    With p = (t - warmup_steps) / decay_steps and frac the fractional part:
    lr(t) = lr_end + 0.5 * (lr - lr_end) * (1 + cos(pi * frac(num_cycles * p))) for p < 1, lr_end from p >= 1 on.
    """

    def __init__(self, learning_rate: float, warmup_steps: Optional[int] = None, total_steps: Optional[int] = None,
                 num_cycles: float = 1., lr_end: float = 0., warmup_lr_init: float = 0.,
                 warmup_ratio: Optional[float] = None, decay_steps: Optional[int] = None):
        super().__init__(learning_rate, warmup_steps, total_steps, num_cycles, lr_end, warmup_lr_init,
                         warmup_ratio, decay_steps)

    def _after_warmup(self, step: Tensor) -> Tensor:
        progress = (step - self.warmup_steps) / float(self.decay_steps)
        cycle_pos = ops.floor_mod(self.num_cycles * progress, 1.0)
        cosine = 0.5 * (1.0 + ops.cos(math.pi * cycle_pos))
        lr = self.lr_end + (self.learning_rate - self.lr_end) * cosine
        return ops.select(progress >= 1.0, ops.full_like(lr, self.lr_end), lr)


@MindFormerRegister.register(MindFormerModuleType.LR)
class PolynomialWithWarmUpLR(_WarmUpLR):
    """Linear warm-up, then polynomial decay to `lr_end`.

    lr(t) = lr_end + (lr - lr_end) * (1 - (t - warmup_steps) / decay_steps) ** power, held at lr_end after;
    decay_steps defaults to total_steps - warmup_steps.
    """

    def __init__(self, learning_rate: float, total_steps: Optional[int] = None, warmup_steps: Optional[int] = None,
                 lr_end: float = 1e-7, power: float = 1.0, warmup_lr_init: float = 0.,
                 warmup_ratio: Optional[float] = None, decay_steps: Optional[int] = None):
        super().__init__(learning_rate, warmup_steps, warmup_lr_init, warmup_ratio, total_steps)
        name = type(self).__name__
        total = _check_total_steps(name, total_steps, "the polynomial decay needs it")
        if learning_rate < lr_end:
            raise ValueError(f"{name}: lr_end ({lr_end}) must not exceed learning_rate ({learning_rate})")
        self.decay_steps = _decay_steps(name, decay_steps, None, total, self.warmup_steps)
        self.lr_end = float(lr_end)
        self.power = float(power)

    def _after_warmup(self, step: Tensor) -> Tensor:
        remaining = 1.0 - self._progress(step, self.warmup_steps, self.decay_steps)
        return self.lr_end + (self.learning_rate - self.lr_end) * ops.pow(remaining, self.power)


@MindFormerRegister.register(MindFormerModuleType.LR)
class WarmUpStableDecayLR(_WarmUpLR):
    """Warm-up, a stable phase at `learning_rate`, then linear decay to `lr_end` at `total_steps` (WSD).

    Decay starts at decay_start_steps (or decay_start_ratio * total_steps):
    lr(t) = lr - (lr - lr_end) * (t - decay_start) / (total_steps - decay_start), held at lr_end after.
    """

    def __init__(self, learning_rate: float, lr_end: float = 1e-7, warmup_steps: Optional[int] = None,
                 warmup_lr_init: float = 0., warmup_ratio: Optional[float] = None, total_steps: Optional[int] = None,
                 decay_start_steps: Optional[int] = None, decay_start_ratio: Optional[float] = None):
        super().__init__(learning_rate, warmup_steps, warmup_lr_init, warmup_ratio, total_steps)
        name = type(self).__name__
        total = _check_total_steps(name, total_steps, "the decay ends at it")
        if lr_end >= learning_rate:
            raise ValueError(f"{name}: lr_end ({lr_end}) must be smaller than learning_rate ({learning_rate})")
        start = _steps_from(name, "decay_start_steps", decay_start_steps, "decay_start_ratio", decay_start_ratio,
                            total)
        if start is None:
            raise ValueError(f"{name}: set decay_start_steps or decay_start_ratio (where the stable phase ends)")
        if not self.warmup_steps <= start < total:
            raise ValueError(f"{name}: the decay must start in [warmup_steps={self.warmup_steps}, "
                             f"total_steps={total}), got decay_start_steps={start}")
        self.decay_start_steps = start
        self.decay_steps = total - start
        self.lr_end = float(lr_end)

    def _after_warmup(self, step: Tensor) -> Tensor:
        progress = self._progress(step, self.decay_start_steps, self.decay_steps)
        return self.learning_rate - (self.learning_rate - self.lr_end) * progress
