"""MFTrainOneStepCell: one optimizer step with loss scaling, overflow skipping, clipping and accumulation."""
from typing import Optional, Union

import mindspore as ms
from mindspore import Tensor, nn, ops
from mindspore.communication import get_group_size

from mindformers.modules.layers import row_reduce
from mindformers.parallel.semi_auto import create_stage_group, pipeline_cell
from mindformers.parallel.tensor_parallel import gradient_reducer, split_mask
from mindformers.parallel.tensor_parallel_cells import TensorParallel
from mindformers.tools.register import MindFormerModuleType, MindFormerRegister

from .loss_scale import build_loss_scaler

__all__ = ["MFTrainOneStepCell", "MFPipelineWithLossScaleCell"]

# Upstream options this implementation does not provide: key -> the only accepted (default) value.
_UNSUPPORTED = {"local_norm": False, "calculate_per_token_loss": False, "use_skip_data_by_global_norm": False,
                "print_separate_loss": False, "global_norm_spike_threshold": 1.0}


@MindFormerRegister.register(MindFormerModuleType.WRAPPER)
class MFTrainOneStepCell(nn.Cell):
    """Wraps a loss network and an optimizer into one compiled training step.

    `construct(*inputs)` runs `network(*inputs)` (a scalar loss), back-propagates `loss * scale`, reduces
    gradients across data-parallel ranks, unscales them, skips the update if any is NaN/Inf (and lets the
    loss scaler back off), optionally clips them to `max_grad_norm` by global norm, applies the optimizer
    and returns `(loss, overflow, loss_scale, global_norm)`: the mean loss (averaged over the data-parallel ranks,
    so every rank reports the global batch's loss), whether the step was skipped,
    the scale used and the unclipped global gradient norm.

    With `gradient_accumulation_steps=k` every input holds k micro-batches stacked on axis 0; their
    gradients are averaged inside the same graph before a single optimizer step, which equals one step on
    the whole batch when the network's loss is a mean over equal-size micro-batches.
    `scale_sense` is a number (fixed scale), a `{type: DynamicLossScaleUpdateCell | FixedLossScaleUpdateCell}`
    config or such a cell. With `tensor_parallel` (set by the trainer when parallel_config.model_parallel > 1
    runs in data-parallel mode) gradients are reduced over its dp group only, and the squared norms of the
    weights split over mp are summed over its mp group, so the global norm is the whole model's.
    """

    def __init__(self, network: nn.Cell, optimizer: nn.Optimizer, use_clip_grad: bool = False,
                 max_grad_norm: float = 1.0, scale_sense: Union[int, float, Tensor, dict, nn.Cell] = 1.0,
                 local_norm: bool = False, calculate_per_token_loss: bool = False,
                 global_norm_spike_threshold: float = 1.0, use_skip_data_by_global_norm: bool = False,
                 print_separate_loss: bool = False, gradient_accumulation_steps: int = 1, norm_groups=None,
                 tensor_parallel: Optional[TensorParallel] = None):
        super().__init__(auto_prefix=False)
        # global_norm_spike_threshold only tunes use_skip_data_by_global_norm, so it is refused with it
        given = {"local_norm": local_norm, "calculate_per_token_loss": calculate_per_token_loss,
                 "use_skip_data_by_global_norm": use_skip_data_by_global_norm,
                 "print_separate_loss": print_separate_loss, "global_norm_spike_threshold": global_norm_spike_threshold}
        device = ms.get_context("device_target")
        for key, value in given.items():
            if value != _UNSUPPORTED[key]:
                raise ValueError(f"MFTrainOneStepCell: {key}={value!r} is not supported on {device}; "
                                 f"remove it from runner_wrapper or set it to {_UNSUPPORTED[key]!r}")
        if max_grad_norm <= 0:
            raise ValueError(f"MFTrainOneStepCell: max_grad_norm must be > 0, got {max_grad_norm}")
        if int(gradient_accumulation_steps) < 1:
            raise ValueError(f"MFTrainOneStepCell: gradient_accumulation_steps must be >= 1, "
                             f"got {gradient_accumulation_steps}")
        self.network = network
        self.network.set_grad()
        self.optimizer = optimizer
        self.weights = optimizer.parameters
        self.grad = ops.GradOperation(get_by_list=True, sens_param=True)
        self.loss_scaler = build_loss_scaler(scale_sense)
        self.use_clip_grad = bool(use_clip_grad)
        self.max_grad_norm = float(max_grad_norm)
        self.accumulation_steps = int(gradient_accumulation_steps)
        # monitor_config: a (groups x parameters) 0/1 matrix; the step then also returns each group's gradient norm
        self.norm_groups = None if norm_groups is None else ms.Tensor(norm_groups, ms.float32)
        self.grad_reducer = ops.identity
        self.split_mask = None
        self.stage_sum = None  # pipeline parallel: sums the gradient norm's squares over the stages
        # data parallel: the loss reported is the mean over the dp ranks, i.e. the global batch's loss
        self.loss_sum, self.dp_size = None, 1
        if tensor_parallel is not None:
            self.grad_reducer = gradient_reducer(self.weights, tensor_parallel,
                                                 ms.get_auto_parallel_context("gradients_mean"))
            self.split_mask = split_mask(self.weights, tensor_parallel)
            self.mp_sum = ops.AllReduce(group=tensor_parallel.mp_group)
            if tensor_parallel.dp > 1:
                self.loss_sum, self.dp_size = ops.AllReduce(group=tensor_parallel.dp_group), tensor_parallel.dp
        elif ms.get_auto_parallel_context("parallel_mode") in ("data_parallel", "hybrid_parallel"):
            # degree=None: average over the communication group's size (device_num may be left unset).
            self.grad_reducer = nn.DistributedGradReducer(self.weights, ms.get_auto_parallel_context("gradients_mean"))
            self.loss_sum, self.dp_size = ops.AllReduce(), get_group_size()

    def construct(self, *inputs):
        """One training step on `inputs`; returns (loss, overflow, loss_scale, global_norm[, group norms])."""
        # Copy the scale now: the scaler overwrites its Parameter at the end of the step.
        scale = self.loss_scaler.scale_sense * 1.0
        if self.accumulation_steps == 1:
            loss, grads = self._loss_and_grads(inputs, scale)
        else:
            loss, grads = self._accumulate(inputs, scale)
        grads = self.grad_reducer(grads)
        if self.loss_sum is not None:
            loss = self.loss_sum(loss) / self.dp_size
        # summed row by row first: a CPU reduction straight to a scalar is slower (see layers.row_reduce)
        squares = ops.stack([row_reduce(ops.square(ops.cast(g, ms.float32))).sum() for g in grads])
        if self.split_mask is not None:  # tensor parallel: a split weight's square norm is the sum of its slices'
            squares = squares * (1.0 - self.split_mask) + self.mp_sum(squares * self.split_mask)
        if self.stage_sum is not None:  # pipeline parallel: each stage has only its own layers' gradients
            squares = self.stage_sum(squares)
        global_norm = ops.sqrt(squares.sum()) / scale
        # A NaN/Inf anywhere makes the norm non-finite, so one check covers every gradient.
        overflow = ops.logical_not(ops.isfinite(global_norm))
        # Unscaling and clipping are one multiplication: a single pass over the gradients.
        factor = 1.0 / scale
        if self.use_clip_grad:
            factor = factor * ops.minimum(self.max_grad_norm / (global_norm + 1e-6), 1.0)
        grads = tuple([g * ops.cast(factor, g.dtype) for g in grads])
        if not overflow:
            self.optimizer(grads)
        # use the scaler's output so its update stays in the graph (a fixed scaler has no side effect)
        overflow = self.loss_scaler(overflow)
        if self.norm_groups is not None:
            return loss, overflow, scale, global_norm, ops.sqrt(ops.mv(self.norm_groups, squares)) / scale
        return loss, overflow, scale, global_norm

    def _loss_and_grads(self, inputs, scale):
        loss = self.network(*inputs)
        grads = self.grad(self.network, self.weights)(*inputs, ops.cast(scale, loss.dtype))
        return ops.cast(loss, ms.float32), grads

    def _accumulate(self, inputs, scale):
        k = self.accumulation_steps
        batch = inputs[0].shape[0]
        if batch % k != 0:
            raise ValueError(f"MFTrainOneStepCell: batch of {batch} rows does not split into "
                             f"gradient_accumulation_steps={k} equal micro-batches")
        micro = batch // k
        loss, grads = self._loss_and_grads(tuple([x[0:micro] for x in inputs]), scale)
        grads = [ops.cast(g, ms.float32) for g in grads]
        for i in range(1, k):  # unrolled: k forward/backward passes in one graph
            chunk = tuple([x[i * micro:(i + 1) * micro] for x in inputs])
            micro_loss, micro_grads = self._loss_and_grads(chunk, scale)
            loss = loss + micro_loss
            grads = [a + ops.cast(b, ms.float32) for a, b in zip(grads, micro_grads)]
        return loss / k, [ops.cast(g / k, w.dtype) for g, w in zip(grads, self.weights)]


_from_accumulation = ops.MultitypeFuncGraph("from_accumulation")
_from_gradient = ops.MultitypeFuncGraph("from_gradient")


@_from_accumulation.register("Tensor", "Tensor")
def _take_accumulated(grad, accu_grad):
    """The micro-batches' gradients MindSpore summed into `accu_grad`; the buffer is zeroed for the next step."""
    accu_grad = ops.depend(accu_grad, grad)
    total = accu_grad * 1.0  # a copy: the buffer is overwritten below
    accu_grad = ops.depend(accu_grad, total)
    return ops.depend(total, ops.assign(accu_grad, ops.zeros_like(accu_grad)))


@_from_gradient.register("Tensor", "Tensor")
def _take_gradient(grad, accu_grad):
    """With the parallel optimizer the reduced gradient itself is the sum; the buffer is still zeroed."""
    accu_grad = ops.depend(accu_grad, grad)
    return ops.depend(grad, ops.assign(accu_grad, ops.zeros_like(accu_grad)))


@MindFormerRegister.register(MindFormerModuleType.WRAPPER)
class MFPipelineWithLossScaleCell(MFTrainOneStepCell):
    """One pipeline-parallel optimizer step (semi-auto parallel on Ascend; upstream's name and role).

    `network` runs inside MindSpore's `Pipeline` cell (parallel/semi_auto.py): each step's batch is cut into
    `micro_batch_num` micro-batches that flow through the stages. MindSpore sums the micro-batches' gradients into
    `accu_grads` (copies of the weights, matched by that prefix), which the step takes and zeroes; the sens
    1/micro_batch_num makes the sum the gradient of the mean micro-batch loss, and the loss returned is that mean.
    The global norm adds each stage's squares over the stage group (`stage_group`, created when None). Loss
    scaling, overflow skipping and clipping are MFTrainOneStepCell's. The trainer selects this cell when
    parallel_config.pipeline_stage > 1; gradient accumulation is the micro-batching itself.
    """

    def __init__(self, network: nn.Cell, optimizer: nn.Optimizer, use_clip_grad: bool = False,
                 max_grad_norm: float = 1.0, scale_sense: Union[int, float, Tensor, dict, nn.Cell] = 1.0,
                 micro_batch_num: int = 1, gradient_accumulation_steps: int = 1, stage_group: Optional[str] = None,
                 **kwargs):
        mode = ms.get_auto_parallel_context("parallel_mode")
        if mode not in ("semi_auto_parallel", "auto_parallel"):
            raise ValueError(f"MFPipelineWithLossScaleCell: pipeline parallel needs parallel_mode semi_auto_parallel "
                             f"(Ascend), not {mode}")
        if int(gradient_accumulation_steps) != 1:
            raise ValueError("MFPipelineWithLossScaleCell: gradient_accumulation_steps must be 1 under pipeline "
                             "parallel; its micro_batch_num micro-batches are the accumulation")
        if kwargs.get("tensor_parallel") is not None:
            raise ValueError("MFPipelineWithLossScaleCell: tensor parallel on explicit collectives is data-parallel "
                             "mode's; semi-auto parallel shards through the plan")
        plan = getattr(network, "shard_plan", None)
        super().__init__(pipeline_cell(network, int(micro_batch_num), plan), optimizer, use_clip_grad, max_grad_norm,
                         scale_sense, **kwargs)
        self.micro_batch_num = int(micro_batch_num)
        self.accu_grads = self.weights.clone(prefix="accu_grads", init="zeros")
        self.opt_shard = bool(ms.get_auto_parallel_context("enable_parallel_optimizer"))
        self.hyper_map = ops.HyperMap()
        if stage_group is None:
            from mindspore.communication import get_rank
            stage_group = create_stage_group(plan.layout, get_rank())
        self.stage_sum = ops.AllReduce(group=stage_group)

    def _loss_and_grads(self, inputs, scale):
        loss = self.network(*inputs)  # the Pipeline cell adds the micro-batches' losses
        sens = ops.cast(scale / self.micro_batch_num, loss.dtype)
        grads = self.grad(self.network, self.weights)(*inputs, sens)
        if self.opt_shard:
            grads = self.hyper_map(_from_gradient, grads, self.accu_grads)
        else:
            grads = self.hyper_map(_from_accumulation, grads, self.accu_grads)
        return ops.cast(loss, ms.float32) / self.micro_batch_num, grads
