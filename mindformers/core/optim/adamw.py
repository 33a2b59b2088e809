"""AdamW with decoupled weight decay, bias-corrected exactly as torch.optim.AdamW."""
import math
from typing import Iterable, List, Union

import mindspore as ms
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops
from mindspore.common.initializer import initializer

from mindformers.tools.register import MindFormerModuleType, MindFormerRegister

__all__ = ["AdamW", "FP32StateAdamWeightDecay"]


def zeros_state(param: Parameter, prefix: str, shape=None, dtype=None) -> Parameter:
    """Zero optimizer state `<prefix>.<param name>` (of the parameter's shape and dtype unless given).

    State of the parameter's shape is registered as the parameter's clone, as MindSpore's own optimizers' state is
    (Parameter.clone, upstream's clone_state): under semi-auto parallel the compile cuts a parameter's clones with
    the parameter's layout, so the state is split like its weight instead of staying whole."""
    shape = tuple(param.shape) if shape is None else tuple(shape)
    state = Parameter(initializer("zeros", shape, dtype or param.dtype), name=f"{prefix}.{param.name}")
    if shape == tuple(param.shape):
        info = param.param_info
        state.param_info = info.clone()  # ParamInfo.clone links the pair (cloned index) on MindSpore's side
        state.name = f"{prefix}.{param.name}"
        if hasattr(info, "cloned_obj"):
            info.cloned_obj.append(state)
        else:
            info.cloned_obj = [state]
        param.param_info = info
    return state


@MindFormerRegister.register(MindFormerModuleType.OPTIMIZER)
class AdamW(nn.Optimizer):
    r"""AdamW (Loshchilov & Hutter) with torch.optim.AdamW's update rule, usable inside a compiled train step.

    For step t = 1, 2, ... with gradient g, learning rate lr_t and weight decay wd::

        g = -g                                    (if maximize)
        w = w * (1 - lr_t * wd)                   (decoupled decay, before the Adam step)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        v_max = max(v_max, v); v_hat = v_max     (amsgrad), else v_hat = v
        w = w - lr_t / (1 - beta1^t) * m / (sqrt(v_hat) / sqrt(1 - beta2^t) + eps)

    `params` is a list of Parameters or of groups `{'params': [...], 'weight_decay': x, 'lr': y}`; without
    groups `weight_decay` applies to every parameter (use `get_optimizer_grouped_parameters` to exempt norms
    and biases). `learning_rate` is a float or a LearningRateSchedule called with the global step (0 first).
    State is kept in Parameters named `adam_m.<param>`, `adam_v.<param>` (`max_adam_v.<param>` with amsgrad)
    and `global_step`, so checkpoints restore it exactly.

    Where state and parameter share a dtype (and without amsgrad) the update runs in MindSpore's in-place
    AdamWeightDecay kernel, which computes w -= lr' * (m / (sqrt(v) + eps') + wd' * w); the rule above is
    the same with lr' = lr_t * sqrt(1 - beta2^t) / (1 - beta1^t), eps' = eps * sqrt(1 - beta2^t) and
    wd' = wd * lr_t / lr'. Written out op by op, a 25M-parameter train step needed 2.3x the peak memory.
    """

    # Dtype of the moment buffers: None keeps each parameter's own dtype, as torch does.
    state_dtype = None
    # True: weight decay shrinks the weights (AdamW); False: it is added to the gradient as L2 (Adam)
    decoupled = True

    def __init__(self, params: Union[List[Parameter], List[dict]], learning_rate=1e-3,
                 betas: Iterable[float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 amsgrad: bool = False, maximize: bool = False, use_fused: bool = False):
        name = type(self).__name__
        betas = tuple(float(b) for b in betas)
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"{name}: betas must be two numbers in [0, 1), got {betas}")
        if eps <= 0:
            raise ValueError(f"{name}: eps must be > 0, got {eps}")
        if not isinstance(weight_decay, (int, float)) or weight_decay < 0:
            raise ValueError(f"{name}: weight_decay must be a number >= 0, got {weight_decay!r}")
        if use_fused:
            raise ValueError(f"{name}: use_fused=True selects upstream's Ascend-only AdamW kernel, not available on "
                             f"{ms.get_context('device_target')}; remove use_fused or set it to False")
        if not isinstance(params, list) or not params:
            raise ValueError(f"{name}: params must be a non-empty list of Parameters or parameter groups")
        super().__init__(learning_rate, params, float(weight_decay))
        self.beta1, self.beta2 = betas
        self.eps = float(eps)
        self.amsgrad = bool(amsgrad)
        self.maximize = bool(maximize)
        # 1 - beta^t is computed as -expm1(t * log(beta)): fp32 `1 - beta**t` loses ~1e-5 relative for beta2.
        self._log_beta1 = math.log(self.beta1) if self.beta1 > 0 else -math.inf
        self._log_beta2 = math.log(self.beta2) if self.beta2 > 0 else -math.inf
        if self.is_group:
            self.decays = tuple(float(wd) for wd in self.group_weight_decay)
        else:
            self.decays = (float(weight_decay),) * len(self._parameters)
        self.moments1 = self._zeros_like_params("adam_m")
        self.moments2 = self._zeros_like_params("adam_v")
        self.max_moments2 = self._zeros_like_params("max_adam_v") if self.amsgrad else self.moments2
        # the fused kernel decays decoupled: an L2 (Adam) decay takes the op-by-op path
        self.fused = tuple(not self.amsgrad and m.dtype == p.dtype and (self.decoupled or d == 0.0)
                           for p, m, d in zip(self._parameters, self.moments1, self.decays))
        self.fused_update = ops.AdamWeightDecay()
        # The fused kernel's lr, eps and decay depend on the step, the group's lr and the decay only: computed once
        # per distinct value in construct instead of once per parameter (a smaller graph to compile).
        self._distinct_decays = tuple(sorted(set(self.decays)))
        self._decay_index = tuple(self._distinct_decays.index(d) for d in self.decays)
        self._beta1_t = Tensor(self.beta1, ms.float32)
        self._beta2_t = Tensor(self.beta2, ms.float32)

    def _zeros_like_params(self, prefix: str) -> ParameterTuple:
        return ParameterTuple(zeros_state(p, prefix, dtype=self.state_dtype or p.dtype) for p in self._parameters)

    def construct(self, gradients):
        """Apply one update from `gradients` (a tuple matching `self.parameters`)."""
        lr = self.get_lr()
        step = ops.cast(self.global_step, ms.float32).reshape(()) + 1.0
        self.assignadd(self.global_step, self.global_step_increase_tensor)
        bias_correction1 = -ops.expm1(step * self._log_beta1)
        bias_correction2_sqrt = ops.sqrt(-ops.expm1(step * self._log_beta2))
        # Bias corrections folded into the fused kernel's lr, eps and decay (see the class docstring).
        kernel_eps = self.eps * bias_correction2_sqrt
        kernel_decays = [wd * bias_correction1 / bias_correction2_sqrt for wd in self._distinct_decays]
        shared_lr = None if self.is_group_lr else lr * bias_correction2_sqrt / bias_correction1
        for i in range(len(self._parameters)):  # unrolled at compile time
            param_lr = lr[i] if self.is_group_lr else lr
            if self.fused[i]:
                kernel_lr = param_lr * bias_correction2_sqrt / bias_correction1 if self.is_group_lr else shared_lr
                self._fused_update(self._parameters[i], self.moments1[i], self.moments2[i], gradients[i], kernel_lr,
                                   kernel_eps, kernel_decays[self._decay_index[i]])
            else:
                self._update(self._parameters[i], self.moments1[i], self.moments2[i], self.max_moments2[i],
                             gradients[i], param_lr, self.decays[i], bias_correction1, bias_correction2_sqrt)
        return True

    def _fused_update(self, param, exp_avg, exp_avg_sq, grad, kernel_lr, kernel_eps, kernel_decay):
        g = grad if grad.dtype == param.dtype else ops.cast(grad, param.dtype)
        if self.maximize:
            g = -g
        self.fused_update(param, exp_avg, exp_avg_sq, kernel_lr, self._beta1_t, self._beta2_t, kernel_eps,
                          kernel_decay, g)

    def _update(self, param, exp_avg, exp_avg_sq, max_exp_avg_sq, grad, lr, weight_decay,
                bias_correction1, bias_correction2_sqrt):
        # Compute in fp32 whatever the storage dtypes are, then cast back.
        f32 = ms.float32
        g = ops.cast(grad, f32)
        if self.maximize:
            g = -g
        w = ops.cast(param, f32)
        if weight_decay != 0.0:
            if self.decoupled:
                w = w * (1.0 - lr * weight_decay)
            else:
                g = g + weight_decay * w
        m = self.beta1 * ops.cast(exp_avg, f32) + (1.0 - self.beta1) * g
        v = self.beta2 * ops.cast(exp_avg_sq, f32) + (1.0 - self.beta2) * g * g
        v_hat = v
        if self.amsgrad:
            v_hat = ops.maximum(ops.cast(max_exp_avg_sq, f32), v)
            ops.assign(max_exp_avg_sq, ops.cast(v_hat, max_exp_avg_sq.dtype))
        denom = ops.sqrt(v_hat) / bias_correction2_sqrt + self.eps
        w = w - (lr / bias_correction1) * m / denom
        ops.assign(exp_avg, ops.cast(m, exp_avg.dtype))
        ops.assign(exp_avg_sq, ops.cast(v, exp_avg_sq.dtype))
        ops.assign(param, ops.cast(w, param.dtype))


@MindFormerRegister.register(MindFormerModuleType.OPTIMIZER, alias="AdamWeightDecay")
class FP32StateAdamWeightDecay(AdamW):
    """AdamW (same bias-corrected math) with fp32 moments whatever the parameter dtype; upstream YAML keys.

    Unlike MindSpore's nn.AdamWeightDecay, the update is bias-corrected: without it the first steps are
    too large and a 55M model diverged at lr 3e-3 on CPU. eps defaults to 1e-6 as upstream's does.
    Also registered as `AdamWeightDecay`.
    """

    state_dtype = ms.float32

    def __init__(self, params: Union[List[Parameter], List[dict]], learning_rate=1e-3, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-6, weight_decay: float = 0.0):
        super().__init__(params, learning_rate, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)


@MindFormerRegister.register(MindFormerModuleType.OPTIMIZER)
class Adam(AdamW):
    """Adam (Kingma & Ba) as torch.optim.Adam: bias-corrected, weight decay added to the gradient (L2).

    Same arguments and checkpointed state as AdamW; only the decay differs: g = g + weight_decay * w.
    """

    decoupled = False
