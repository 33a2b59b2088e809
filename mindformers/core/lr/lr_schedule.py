"""Learning-rate schedules with a linear warm-up (upstream 2.x names, YAML keys and formulas).

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

__all__ = ["ConstantWarmUpLR", "ConstantWithCoolDownLR", "LinearWithWarmUpLR", "CosineWithWarmUpLR",
           "CosineWithRestartsAndWarmUpLR", "PolynomialWithWarmUpLR", "WarmUpStableDecayLR"]


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


def _decay_end(name: str, decay_steps, decay_ratio, total_steps) -> int:
    """Upstream's decay_steps: max(1, decay_steps), or int(decay_ratio * total_steps), or total_steps."""
    steps = _steps_from(name, "decay_steps", decay_steps, "decay_ratio", decay_ratio, total_steps)
    if steps is None:
        return max(1, _check_total_steps(name, total_steps, "decay_steps defaults to it"))
    return steps if decay_ratio is not None else max(1, steps)


class StepSchedule(LearningRateSchedule):
    """A learning rate as a function of the global step, readable eagerly with `value(step)`."""

    def value(self, step: int) -> float:
        """Learning rate at `step` as a Python float (for logging and tests)."""
        # Called as a Cell: in GRAPH mode (training) it compiles once and each call is then a fraction of the
        # op-by-op construct's cost, which every training step's log line would pay (docs/performance.md)
        return float(self(Tensor(step, ms.int32)).asnumpy())

    @staticmethod
    def _progress(step: Tensor, start: int, length: int) -> Tensor:
        """Fraction of [start, start + length) elapsed at `step`, clipped to [0, 1]."""
        return ops.clip_by_value((step - start) / float(max(length, 1)), 0.0, 1.0)


class _WarmUpLR(StepSchedule):
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
        return self._finish(step, ops.select(step < self.warmup_steps, warm, self._after_warmup(step)))

    def _finish(self, step: Tensor, lr: Tensor) -> Tensor:
        """Override to replace the rate from some step on, warm-up included (upstream's decay_steps cut-off)."""
        return lr


@MindFormerRegister.register(MindFormerModuleType.LR)
class ConstantWarmUpLR(_WarmUpLR):
    """Linear warm-up, then a constant `learning_rate`.

    Upstream accepts `lr_end` here and never uses it; it is accepted when it equals learning_rate (the rate the
    schedule ends at) and refused otherwise, since a different value would be ignored.
    """

    def __init__(self, learning_rate: float, warmup_steps: Optional[int] = None, warmup_lr_init: float = 0.,
                 warmup_ratio: Optional[float] = None, total_steps: Optional[int] = None,
                 lr_end: Optional[float] = None):
        super().__init__(learning_rate, warmup_steps, warmup_lr_init, warmup_ratio, total_steps)
        if lr_end is not None and not math.isclose(lr_end, learning_rate, rel_tol=1e-6, abs_tol=0.0):
            raise ValueError(
                f"ConstantWarmUpLR: lr_end ({lr_end}) differs from learning_rate ({learning_rate}), but the rate "
                f"stays at learning_rate after warm-up (upstream ignores lr_end); drop lr_end or use a decaying "
                f"schedule (CosineWithWarmUpLR, WarmUpStableDecayLR, ConstantWithCoolDownLR)")

    def _after_warmup(self, step: Tensor) -> Tensor:
        return ops.full_like(step, self.learning_rate)


@MindFormerRegister.register(MindFormerModuleType.LR)
class ConstantWithCoolDownLR(_WarmUpLR):
    """Warm-up, `keep_steps` at `learning_rate`, a cosine cool-down to `lr_end1` over `decay_steps`,
    `final_steps` at `lr_end1`, then `lr_end2` (DeepSeek-V3 report, p. 23).

    With p = (t - warmup_steps - keep_steps) / decay_steps during the cool-down:
    lr(t) = lr_end1 + (lr - lr_end1) * 0.5 * (1 + cos(2 * pi * num_cycles * p)).
    decay_steps defaults to total_steps (as upstream), or decay_ratio * total_steps; lr_end2 defaults to lr_end1.
    """

    def __init__(self, learning_rate: float, warmup_steps: Optional[int] = None, warmup_lr_init: float = 0.,
                 warmup_ratio: Optional[float] = None, keep_steps: int = 0, decay_steps: Optional[int] = None,
                 decay_ratio: Optional[float] = None, total_steps: Optional[int] = None, num_cycles: float = 0.5,
                 lr_end1: float = 0., final_steps: int = 0, lr_end2: Optional[float] = None):
        super().__init__(learning_rate, warmup_steps, warmup_lr_init, warmup_ratio, total_steps)
        name = type(self).__name__
        for key, steps in (("keep_steps", keep_steps), ("final_steps", final_steps)):
            if steps is not None and int(steps) < 0:
                raise ValueError(f"{name}: {key} must be >= 0, got {steps}")
        self.keep_steps, self.final_steps = int(keep_steps or 0), int(final_steps or 0)
        self.decay_steps = _decay_end(name, decay_steps, decay_ratio, total_steps)
        self.num_cycles = float(num_cycles)
        self.lr_end1 = float(lr_end1)
        self.lr_end2 = self.lr_end1 if lr_end2 is None else float(lr_end2)
        self._decay_start = self.warmup_steps + self.keep_steps
        self._decay_stop = self._decay_start + self.decay_steps

    def _after_warmup(self, step: Tensor) -> Tensor:
        progress = (step - self._decay_start) / float(max(self.decay_steps, 1))
        cosine = 0.5 * (1.0 + ops.cos(2.0 * math.pi * self.num_cycles * progress))
        lr = self.lr_end1 + (self.learning_rate - self.lr_end1) * cosine
        lr = ops.select(step < self._decay_start, ops.full_like(step, self.learning_rate), lr)
        tail = ops.select(step < self._decay_stop + self.final_steps, ops.full_like(step, self.lr_end1),
                          ops.full_like(step, self.lr_end2))
        return ops.select(step < self._decay_stop, lr, tail)


@MindFormerRegister.register(MindFormerModuleType.LR)
class LinearWithWarmUpLR(_WarmUpLR):
    """Linear warm-up, then linear decay to `lr_end` at `total_steps`.

    lr(t) = lr - (lr - lr_end) * (t - warmup_steps) / (total_steps - warmup_steps), held at lr_end after.
    Upstream decays to 0 and has no lr_end; the default lr_end=0 is its schedule.
    """

    def __init__(self, learning_rate: float, total_steps: Optional[int] = None, warmup_steps: Optional[int] = None,
                 warmup_lr_init: float = 0., warmup_ratio: Optional[float] = None, lr_end: float = 0.):
        super().__init__(learning_rate, warmup_steps, warmup_lr_init, warmup_ratio, total_steps)
        self.total_steps = _check_total_steps(type(self).__name__, total_steps, "the decay needs it")
        self.lr_end = float(lr_end)

    def _after_warmup(self, step: Tensor) -> Tensor:
        progress = self._progress(step, self.warmup_steps, self.total_steps - self.warmup_steps)
        return self.learning_rate - (self.learning_rate - self.lr_end) * progress


@MindFormerRegister.register(MindFormerModuleType.LR)
class CosineWithWarmUpLR(_WarmUpLR):
    """Linear warm-up, then a cosine from `learning_rate` to `lr_end` over the steps after warm-up.

    With p = (t - warmup_steps) / (total_steps - warmup_steps):
    lr(t) = lr_end + 0.5 * (lr - lr_end) * (1 + cos(2 * pi * num_cycles * p)); num_cycles=0.5 is one half-wave.
    As upstream, decay_steps (or decay_ratio * total_steps; default total_steps) is the step from which the
    rate is lr_end: it cuts the cosine short, it does not stretch or squeeze it.
    """

    def __init__(self, learning_rate: float, warmup_steps: Optional[int] = None, total_steps: Optional[int] = None,
                 num_cycles: float = 0.5, lr_end: float = 0., warmup_lr_init: float = 0.,
                 warmup_ratio: Optional[float] = None, decay_steps: Optional[int] = None,
                 decay_ratio: Optional[float] = None):
        super().__init__(learning_rate, warmup_steps, warmup_lr_init, warmup_ratio, total_steps)
        name = type(self).__name__
        self.total_steps = _check_total_steps(name, total_steps, "the cosine spans total_steps - warmup_steps")
        self.cosine_steps = max(1, self.total_steps - self.warmup_steps)
        self.decay_steps = _decay_end(name, decay_steps, decay_ratio, self.total_steps)
        self.num_cycles = float(num_cycles)
        self.lr_end = float(lr_end)

    def _after_warmup(self, step: Tensor) -> Tensor:
        progress = (step - self.warmup_steps) / float(self.cosine_steps)
        cosine = 0.5 * (1.0 + ops.cos(2.0 * math.pi * self.num_cycles * progress))
        return self.lr_end + (self.learning_rate - self.lr_end) * cosine

    def _finish(self, step: Tensor, lr: Tensor) -> Tensor:
        return ops.select(step >= self.decay_steps, ops.full_like(lr, self.lr_end), lr)


@MindFormerRegister.register(MindFormerModuleType.LR)
class CosineWithRestartsAndWarmUpLR(CosineWithWarmUpLR):
    """Linear warm-up, then `num_cycles` cosine decays from `learning_rate` to `lr_end`, each a hard restart.

    With p = (t - warmup_steps) / (total_steps - warmup_steps) and frac the fractional part:
    lr(t) = lr_end + 0.5 * (lr - lr_end) * (1 + cos(pi * frac(num_cycles * p))) for p < 1. From decay_steps
    (default total_steps) on the rate is lr_end; between total_steps and a larger decay_steps it is 0, as upstream.
    """

    def __init__(self, learning_rate: float, warmup_steps: Optional[int] = None, total_steps: Optional[int] = None,
                 num_cycles: float = 1., lr_end: float = 0., warmup_lr_init: float = 0.,
                 warmup_ratio: Optional[float] = None, decay_steps: Optional[int] = None):
        super().__init__(learning_rate, warmup_steps, total_steps, num_cycles, lr_end, warmup_lr_init,
                         warmup_ratio, decay_steps)

    def _after_warmup(self, step: Tensor) -> Tensor:
        progress = (step - self.warmup_steps) / float(self.cosine_steps)
        cycle_pos = ops.floor_mod(self.num_cycles * progress, 1.0)
        cosine = 0.5 * (1.0 + ops.cos(math.pi * cycle_pos))
        lr = self.lr_end + (self.learning_rate - self.lr_end) * cosine
        return ops.select(progress < 1.0, lr, ops.zeros_like(lr))


@MindFormerRegister.register(MindFormerModuleType.LR)
class PolynomialWithWarmUpLR(_WarmUpLR):
    """Linear warm-up, then polynomial decay to `lr_end`.

    lr(t) = lr_end + (lr - lr_end) * (1 - (t - warmup_steps) / decay_steps) ** power, lr_end after total_steps;
    decay_steps defaults to total_steps - warmup_steps. A shorter decay_steps holds lr_end from its end on
    (upstream's formula would go below lr_end there).
    """

    def __init__(self, learning_rate: float, total_steps: Optional[int] = None, warmup_steps: Optional[int] = None,
                 lr_end: float = 1e-7, power: float = 1.0, warmup_lr_init: float = 0.,
                 warmup_ratio: Optional[float] = None, decay_steps: Optional[int] = None):
        super().__init__(learning_rate, warmup_steps, warmup_lr_init, warmup_ratio, total_steps)
        name = type(self).__name__
        self.total_steps = _check_total_steps(name, total_steps, "the polynomial decay needs it")
        if not learning_rate > lr_end:
            raise ValueError(f"{name}: lr_end ({lr_end}) must be smaller than learning_rate ({learning_rate})")
        if power < 0:
            raise ValueError(f"{name}: power must be >= 0, got {power}")
        steps = _steps_from(name, "decay_steps", decay_steps, "decay_ratio", None, self.total_steps)
        self.decay_steps = max(1, self.total_steps - self.warmup_steps if steps is None else steps)
        self.lr_end = float(lr_end)
        self.power = float(power)

    def _after_warmup(self, step: Tensor) -> Tensor:
        remaining = 1.0 - self._progress(step, self.warmup_steps, self.decay_steps)
        lr = self.lr_end + (self.learning_rate - self.lr_end) * ops.pow(remaining, self.power)
        return ops.select(step > self.total_steps, ops.full_like(lr, self.lr_end), lr)


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
