"""Loss-scale managers for MFTrainOneStepCell: a fixed scale and a dynamic one that backs off on overflow."""
from typing import Union

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from mindformers.tools.register import MindFormerModuleType, MindFormerRegister, build_from_config

__all__ = ["FixedLossScaleUpdateCell", "DynamicLossScaleUpdateCell", "build_loss_scaler"]


class _LossScaleCell(nn.Cell):
    """Holds the current loss scale in a Parameter named `scale_sense` (the upstream checkpoint name)."""

    def __init__(self, loss_scale_value: float):
        super().__init__(auto_prefix=False)
        if not loss_scale_value >= 1.0:
            raise ValueError(f"{type(self).__name__}: loss_scale_value must be >= 1, got {loss_scale_value}")
        self.scale_sense = Parameter(Tensor(float(loss_scale_value), ms.float32), name="scale_sense",
                                     requires_grad=False)

    def get_loss_scale(self) -> float:
        """Current scale as a Python float."""
        return float(self.scale_sense.asnumpy())


@MindFormerRegister.register(MindFormerModuleType.WRAPPER)
class FixedLossScaleUpdateCell(_LossScaleCell):
    """A constant loss scale; an overflowing step is still skipped."""

    def __init__(self, loss_scale_value: float = 1.0):
        super().__init__(loss_scale_value)

    def construct(self, overflow: Tensor) -> Tensor:
        """Nothing to update; returns `overflow`."""
        return overflow


@MindFormerRegister.register(MindFormerModuleType.WRAPPER)
class DynamicLossScaleUpdateCell(_LossScaleCell):
    """Divide the scale by `scale_factor` on overflow (not below 1); multiply it after `scale_window` clean steps."""

    def __init__(self, loss_scale_value: float = 2.0 ** 16, scale_factor: float = 2.0, scale_window: int = 1000):
        super().__init__(loss_scale_value)
        if scale_factor <= 1.0:
            raise ValueError(f"DynamicLossScaleUpdateCell: scale_factor must be > 1, got {scale_factor}")
        if int(scale_window) < 1:
            raise ValueError(f"DynamicLossScaleUpdateCell: scale_window must be >= 1, got {scale_window}")
        self.scale_factor = float(scale_factor)
        self.scale_window = int(scale_window)
        self.good_steps = Parameter(Tensor(0, ms.int32), name="loss_scale_good_steps", requires_grad=False)

    def construct(self, overflow: Tensor) -> Tensor:
        """Update the scale after a step whose gradients did (`overflow` True) or did not overflow."""
        good_steps = ops.select(overflow, ops.zeros_like(self.good_steps), self.good_steps + 1)
        grow = good_steps >= self.scale_window
        scale = self.scale_sense
        new_scale = ops.select(overflow, ops.maximum(scale / self.scale_factor, 1.0),
                               ops.select(grow, scale * self.scale_factor, scale))
        ops.assign(self.scale_sense, new_scale)
        ops.assign(self.good_steps, ops.select(grow, ops.zeros_like(good_steps), good_steps))
        return overflow


def build_loss_scaler(scale_sense: Union[int, float, Tensor, dict, nn.Cell]) -> _LossScaleCell:
    """Turn a `scale_sense` value (number, 0-d/1-element Tensor, `{type: ...}` config or cell) into a scaler."""
    if isinstance(scale_sense, _LossScaleCell):
        return scale_sense
    if isinstance(scale_sense, bool):
        raise TypeError(f"scale_sense must be a number, a Tensor or a loss-scale config, got {scale_sense!r}")
    if isinstance(scale_sense, (int, float)):
        return FixedLossScaleUpdateCell(float(scale_sense))
    if isinstance(scale_sense, Tensor):
        if scale_sense.size != 1:
            raise ValueError(f"scale_sense Tensor must have shape () or (1,), got {scale_sense.shape}")
        return FixedLossScaleUpdateCell(float(scale_sense.asnumpy().reshape(())))
    if hasattr(scale_sense, "keys"):
        scaler = build_from_config(scale_sense, MindFormerModuleType.WRAPPER)
        if not isinstance(scaler, _LossScaleCell):
            raise TypeError(f"scale_sense type '{scale_sense['type']}' is not a loss-scale cell; use "
                            f"DynamicLossScaleUpdateCell or FixedLossScaleUpdateCell")
        return scaler
    raise TypeError(f"scale_sense must be a number, a Tensor, a {{type: DynamicLossScaleUpdateCell, ...}} config "
                    f"or a loss-scale cell, got {type(scale_sense).__name__}")
