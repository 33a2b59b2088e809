"""SGDR cosine annealing (Loshchilov & Hutter 2016) without warm-up, with upstream's names and keys.

Both match torch.optim.lr_scheduler's classes of the same name stepped once per optimizer update.
"""
import math

import mindspore as ms
from mindspore import Tensor, ops

from mindformers.tools.register import MindFormerModuleType, MindFormerRegister

from .lr_schedule import StepSchedule

__all__ = ["CosineAnnealingLR", "CosineAnnealingWarmRestarts"]


def _positive_int(name: str, key: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: {key} must be a positive integer, got {value!r}")
    return value


def _annealed(base_lr: float, eta_min: float, t_cur: Tensor, t_i) -> Tensor:
    return eta_min + (base_lr - eta_min) * 0.5 * (1.0 + ops.cos(math.pi * t_cur / t_i))


@MindFormerRegister.register(MindFormerModuleType.LR)
class CosineAnnealingLR(StepSchedule):
    """lr(t) = eta_min + (base_lr - eta_min) * 0.5 * (1 + cos(pi * t / t_max)); past t_max it rises again."""

    def __init__(self, base_lr: float, t_max: int, eta_min: float = 0.):
        super().__init__()
        self.t_max = _positive_int(type(self).__name__, "t_max", t_max)
        self.base_lr, self.eta_min = float(base_lr), float(eta_min)

    def construct(self, global_step: Tensor) -> Tensor:
        """Learning rate for `global_step`."""
        step = ops.cast(global_step, ms.float32).reshape(())
        return _annealed(self.base_lr, self.eta_min, step, float(self.t_max))


@MindFormerRegister.register(MindFormerModuleType.LR)
class CosineAnnealingWarmRestarts(StepSchedule):
    """Cosine from base_lr towards eta_min over t_0 steps, then restarts at base_lr, each period t_mult x longer.

    Cycle i spans T_i = t_0 * t_mult**i steps from S_i = t_0 * (t_mult**i - 1) / (t_mult - 1);
    lr(t) = eta_min + (base_lr - eta_min) * 0.5 * (1 + cos(pi * (t - S_i) / T_i)).
    """

    def __init__(self, base_lr: float, t_0: int, t_mult: int = 1, eta_min: float = 0.):
        super().__init__()
        name = type(self).__name__
        self.t_0 = _positive_int(name, "t_0", t_0)
        self.t_mult = _positive_int(name, "t_mult", t_mult)
        self.base_lr, self.eta_min = float(base_lr), float(eta_min)
        if self.t_mult > 1:
            # Cycle starts up to the int32 step range, compared exactly: upstream's floor(log(...)) lands a step
            # early or late on a restart when float32 rounds the log.
            starts, periods = [0], [self.t_0]
            while starts[-1] < 2 ** 31:
                starts.append(starts[-1] + periods[-1])
                periods.append(periods[-1] * self.t_mult)
            self._starts = Tensor(starts, ms.float32)
            self._periods = Tensor(periods, ms.float32)

    def construct(self, global_step: Tensor) -> Tensor:
        """Learning rate for `global_step`."""
        step = ops.cast(global_step, ms.float32).reshape(())
        if self.t_mult == 1:
            return _annealed(self.base_lr, self.eta_min, ops.floor_mod(step, float(self.t_0)), float(self.t_0))
        # Starts and periods both increase, so the largest ones reached by `step` belong to the current cycle.
        reached = step >= self._starts
        start = ops.reduce_max(ops.select(reached, self._starts, ops.zeros_like(self._starts)))
        period = ops.reduce_max(ops.select(reached, self._periods, ops.zeros_like(self._periods)))
        return _annealed(self.base_lr, self.eta_min, step - start, period)
