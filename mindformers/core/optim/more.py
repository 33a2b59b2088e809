"""SGD with momentum, Lion and Adafactor, with torch's update rules, usable inside the compiled train step.

Like AdamW they take a list of Parameters or parameter groups (`get_optimizer_grouped_parameters`), a float
or LearningRateSchedule `learning_rate`, and keep their state in Parameters with stable names (prefixed by
the state's name) so checkpoints restore it exactly. Updates are computed in fp32 and cast back.
"""
from typing import List, Sequence, Tuple, Union

import mindspore as ms
import numpy as np
from mindspore import ParameterTuple, nn, ops

from mindformers.modules.layers import row_reduce
from mindformers.tools.register import MindFormerModuleType, MindFormerRegister

from .adamw import zeros_state

F32 = ms.float32


def _rms(x):
    """sqrt(mean(x * x)) over every element, averaged row by row first: on CPU a reduction straight to a
    scalar is slower (see modules.layers.row_reduce); every row has the same length, so the value is equal."""
    return ops.sqrt(row_reduce(x * x, ops.mean).mean())


class _StatefulOptimizer(nn.Optimizer):
    """Argument checks, per-parameter weight decays and named zero-initialised state."""

    def __init__(self, params, learning_rate, weight_decay: float):
        name = type(self).__name__
        if not isinstance(params, list) or not params:
            raise ValueError(f"{name}: params must be a non-empty list of Parameters or parameter groups")
        if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or weight_decay < 0:
            raise ValueError(f"{name}: weight_decay must be a number >= 0, got {weight_decay!r}")
        super().__init__(learning_rate, params, float(weight_decay))
        self.decays = tuple(float(d) for d in self.group_weight_decay) if self.is_group else \
            (float(weight_decay),) * len(self._parameters)

    def _state(self, prefix: str, shape_of=lambda p: p.shape) -> ParameterTuple:
        return ParameterTuple(zeros_state(p, prefix, shape_of(p), F32) for p in self._parameters)

    def _lr(self, lr, i):
        return lr[i] if self.is_group_lr else lr


def _check(name: str, **ranges):
    for key, (value, low, high) in ranges.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value < high:
            raise ValueError(f"{name}: {key} must be a number in [{low}, {high}), got {value!r}")


@MindFormerRegister.register(MindFormerModuleType.OPTIMIZER)
class SGD(_StatefulOptimizer):
    """torch.optim.SGD: d = g + wd*w; with momentum b = momentum*b + (1 - dampening)*d (b = d on the first
    step), d = d + momentum*b if nesterov else b; w -= lr * d. State: `momentum_buffer.<param>`."""

    def __init__(self, params, learning_rate=1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0, maximize: bool = False):
        _check("SGD", momentum=(momentum, 0.0, 1.0), dampening=(dampening, 0.0, 1.0 + 1e-12))
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: nesterov needs momentum > 0 and dampening 0")
        super().__init__(params, learning_rate, weight_decay)
        self.momentum, self.dampening = float(momentum), float(dampening)
        self.nesterov, self.maximize = bool(nesterov), bool(maximize)
        self.buffers = self._state("momentum_buffer") if self.momentum else ()

    def construct(self, gradients):
        lr = self.get_lr()
        first = ops.equal(self.global_step.reshape(()), 0)
        self.assignadd(self.global_step, self.global_step_increase_tensor)
        for i in range(len(self._parameters)):
            param = self._parameters[i]
            w = ops.cast(param, F32)
            d = ops.cast(gradients[i], F32)
            if self.maximize:
                d = -d
            if self.decays[i] != 0.0:
                d = d + self.decays[i] * w
            if self.momentum:
                buf = ops.select(first, d, self.momentum * self.buffers[i] + (1.0 - self.dampening) * d)
                ops.assign(self.buffers[i], buf)
                d = d + self.momentum * buf if self.nesterov else buf
            ops.assign(param, ops.cast(w - self._lr(lr, i) * d, param.dtype))
        return True


@MindFormerRegister.register(MindFormerModuleType.OPTIMIZER)
class Lion(_StatefulOptimizer):
    """Lion (Chen et al. 2023): w = w*(1 - lr*wd) - lr * sign(b1*m + (1-b1)*g); m = b2*m + (1-b2)*g.
    State: `lion_m.<param>`. Use a lr about 3-10x smaller than AdamW's and a larger weight decay."""

    def __init__(self, params, learning_rate=1e-4, betas: Sequence[float] = (0.9, 0.99), weight_decay: float = 0.0,
                 maximize: bool = False):
        betas = tuple(float(b) for b in betas)
        if len(betas) != 2:
            raise ValueError(f"Lion: betas must be two numbers, got {betas}")
        _check("Lion", beta1=(betas[0], 0.0, 1.0), beta2=(betas[1], 0.0, 1.0))
        super().__init__(params, learning_rate, weight_decay)
        self.beta1, self.beta2 = betas
        self.maximize = bool(maximize)
        self.moments = self._state("lion_m")

    def construct(self, gradients):
        lr = self.get_lr()
        self.assignadd(self.global_step, self.global_step_increase_tensor)
        for i in range(len(self._parameters)):
            param, m = self._parameters[i], self.moments[i]
            g = ops.cast(gradients[i], F32)
            if self.maximize:
                g = -g
            step_lr = self._lr(lr, i)
            w = ops.cast(param, F32) * (1.0 - step_lr * self.decays[i])
            w = w - step_lr * ops.sign(self.beta1 * m + (1.0 - self.beta1) * g)
            ops.assign(m, self.beta2 * m + (1.0 - self.beta2) * g)
            ops.assign(param, ops.cast(w, param.dtype))
        return True


def _factored_shapes(shape) -> Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]:
    """(row state, column state, full state) shapes; a factored tensor keeps no full state (1 element)."""
    if len(shape) >= 2:
        return tuple(shape[:-1]) + (1,), tuple(shape[:-2]) + (1, shape[-1]), (1,)
    return (1,), (1,), tuple(shape)


@MindFormerRegister.register(MindFormerModuleType.OPTIMIZER)
class Adafactor(_StatefulOptimizer):
    """Adafactor as torch.optim.Adafactor (torch 2.5+, after Shazeer & Stern 2018):

        rho_t = min(lr, 1/sqrt(t)); alpha = max(eps2, rms(w)) * rho_t; beta2_t = 1 - t^beta2_decay
        w = w * (1 - lr * wd)
        >= 2-D: R = lerp(R, mean(g^2, -1), 1-beta2_t); C = lerp(C, mean(g^2, -2), 1-beta2_t);
                V = R C / max(mean(R, -2), eps1)             (row/column factors, no full second moment)
        1-D:    V = lerp(V, g^2, 1-beta2_t)
        u = g / sqrt(max(V, eps1^2)); w -= alpha / max(1, rms(u) / d) * u

    eps1 None means fp32's machine epsilon. State: `adafactor_row.<param>`, `adafactor_col.<param>` and
    `adafactor_var.<param>` (a 1-element placeholder where unused).
    """

    def __init__(self, params, learning_rate=1e-2, beta2_decay: float = -0.8,
                 eps: Sequence[Union[float, None]] = (None, 1e-3), d: float = 1.0, weight_decay: float = 0.0,
                 maximize: bool = False):
        if not beta2_decay <= 0:
            raise ValueError(f"Adafactor: beta2_decay must be <= 0, got {beta2_decay}")
        if len(eps) != 2 or (eps[0] is not None and eps[0] <= 0) or eps[1] <= 0:
            raise ValueError(f"Adafactor: eps must be (eps1 > 0 or None, eps2 > 0), got {eps}")
        if d <= 0:
            raise ValueError(f"Adafactor: d (the update clipping threshold) must be > 0, got {d}")
        super().__init__(params, learning_rate, weight_decay)
        self.beta2_decay, self.d, self.maximize = float(beta2_decay), float(d), bool(maximize)
        self.eps1 = float(np.finfo(np.float32).eps) if eps[0] is None else float(eps[0])
        self.eps2 = float(eps[1])
        self.rows = self._state("adafactor_row", lambda p: _factored_shapes(p.shape)[0])
        self.cols = self._state("adafactor_col", lambda p: _factored_shapes(p.shape)[1])
        self.variances = self._state("adafactor_var", lambda p: _factored_shapes(p.shape)[2])
        self.factored = tuple(len(p.shape) >= 2 for p in self._parameters)

    def construct(self, gradients):
        lr = self.get_lr()
        step = ops.cast(self.global_step, F32).reshape(()) + 1.0
        self.assignadd(self.global_step, self.global_step_increase_tensor)
        one_minus_beta2 = ops.pow(step, self.beta2_decay)
        for i in range(len(self._parameters)):
            param = self._parameters[i]
            step_lr = self._lr(lr, i)
            g = ops.cast(gradients[i], F32)
            if self.maximize:
                g = -g
            w = ops.cast(param, F32)
            rho = ops.minimum(step_lr, ops.rsqrt(step))
            alpha = ops.maximum(self.eps2, _rms(w)) * rho
            if self.decays[i] != 0.0:
                w = w * (1.0 - step_lr * self.decays[i])
            if self.factored[i]:
                row = self.rows[i] + (ops.mean(g * g, -1, keep_dims=True) - self.rows[i]) * one_minus_beta2
                col = self.cols[i] + (ops.mean(g * g, -2, keep_dims=True) - self.cols[i]) * one_minus_beta2
                ops.assign(self.rows[i], row)
                ops.assign(self.cols[i], col)
                var = ops.matmul(row, col) / ops.maximum(ops.mean(row, -2, keep_dims=True), self.eps1)
            else:
                var = self.variances[i] + (g * g - self.variances[i]) * one_minus_beta2
                ops.assign(self.variances[i], var)
            update = ops.rsqrt(ops.maximum(var, self.eps1 * self.eps1)) * g
            denom = ops.maximum(1.0, _rms(update) / self.d)
            ops.assign(param, ops.cast(w - (alpha / denom) * update, param.dtype))
        return True


__all__: List[str] = ["SGD", "Lion", "Adafactor"]
