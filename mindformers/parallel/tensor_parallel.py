"""Tensor (model) parallelism on explicit collectives, Megatron-LM style, for data-parallel mode under msrun.

MindSpore's semi-auto parallel inserts the communication itself but runs only on Ascend ("Invalid backend: CPU").
Measured on CPU with MindSpore 2.10 and msrun: AllReduce runs in created groups, AllGather only in the world
group ("AllGather only support mccl_world_group on CPU"), and ReduceScatter, AlltoAll and send/recv have no CPU
kernels, which also rules out the automatic gradient of AllGather (a ReduceScatter). So every collective here
is an AllReduce inside a cell whose backward (`bprop`) is written out (Megatron's f and g operators):

- `CopyToModelParallel` (f): identity forward, AllReduce of the gradient backward. Before a column-parallel
  matmul: every rank holds the whole input, and its gradient is the sum of every rank's part.
- `ReduceFromModelParallel` (g): AllReduce forward, identity backward. After a row-parallel matmul.
- `GatherFromModelParallel`: the slices of all ranks concatenated on the last axis, as an AllReduce of this
  rank's slice placed in zeros (exact: x + 0 = x); backward keeps this rank's part of the gradient, since what
  follows (the loss) is computed whole on every rank.

`apply_tensor_parallel` turns a built model into this rank's part: in every `CausalSelfAttention` with plain
`Linear` projections, q/k/v become column-parallel (heads split over mp) and o row-parallel; in every dense
`SwiGLU`, gate/up column-parallel and down row-parallel; an untied lm_head column-parallel with gathered logits.
Everything else (embedding, norms, routers, MoE experts, LoRA-wrapped or fused projections) stays replicated:
it sees whole activations on every rank, so it computes the same values and gets the same gradients there.
Ranks form a dp x mp grid, mp fastest (rank = d * mp + m, as in plan.py); data-parallel gradients are averaged
in the dp group only. Checkpoints hold whole tensors: `full_state` gathers the slices, `local_state` cuts them.
"""
import logging
from typing import Dict, Optional

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from ..modules.attention import CausalSelfAttention
from ..modules.layers import Linear, SwiGLU
from .plan import MeshLayout

logger = logging.getLogger("mindformers")

COLUMN, ROW = 0, 1  # the weight dim split over mp: output features (column parallel) or input features (row)


class TensorParallel:
    """This rank's place in the dp x mp grid, its two communication groups and the parameters split over mp."""

    def __init__(self, dp: int, mp: int, rank: int):
        if not 0 <= rank < dp * mp:
            raise ValueError(f"rank {rank} is outside the dp x mp grid {dp} x {mp}")
        self.dp, self.mp, self.rank = dp, mp, rank
        self.dp_rank, self.mp_rank = divmod(rank, mp)
        self.mp_group, self.mp_ranks = f"tp_mp_{self.dp_rank}", [self.dp_rank * mp + m for m in range(mp)]
        self.dp_group, self.dp_ranks = f"tp_dp_{self.mp_rank}", [d * mp + self.mp_rank for d in range(dp)]
        self.split: Dict[str, int] = {}  # parameter name -> dim split over mp (full size in `full_shapes`)
        self.full_shapes: Dict[str, tuple] = {}

    def create_groups(self):
        """Create the mp and dp groups this rank belongs to (needs mindspore.communication.init())."""
        from mindspore.communication import create_group
        if self.mp > 1:
            create_group(self.mp_group, self.mp_ranks)
        if self.dp > 1:
            create_group(self.dp_group, self.dp_ranks)

    def part(self, size: int) -> slice:
        """This rank's part of a dim of `size` split over mp."""
        step = size // self.mp
        return slice(self.mp_rank * step, (self.mp_rank + 1) * step)

    def _owner(self, key: str) -> Optional[str]:
        """The split parameter a state entry belongs to: the parameter itself or optimizer state `<prefix>.<name>`."""
        if key in self.split:
            return key
        return next((n for n in self.split if key.endswith("." + n)), None)

    def local_state(self, full: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Whole tensors (a checkpoint's weights or optimizer state) -> this rank's slices of the split ones."""
        out = dict(full)
        for key, value in full.items():
            name = self._owner(key)
            if name is None:
                continue
            if tuple(value.shape) != self.full_shapes[name]:
                raise ValueError(f"tensor parallel: {key} has shape {tuple(value.shape)}, not the full shape "
                                 f"{self.full_shapes[name]} of {name}; only elementwise optimizer state can be split")
            index = [slice(None)] * value.ndim
            index[self.split[name]] = self.part(value.shape[self.split[name]])
            out[key] = np.ascontiguousarray(value[tuple(index)])
        return out

    def padded(self, key: str, value: np.ndarray) -> np.ndarray:
        """This rank's slice of `key` placed in zeros of the full shape (the sum over mp ranks is the whole)."""
        name = self._owner(key)
        dim = self.split[name]
        shape = list(value.shape)
        shape[dim] *= self.mp
        whole = np.zeros(shape, value.dtype)
        index = [slice(None)] * value.ndim
        index[dim] = self.part(shape[dim])
        whole[tuple(index)] = value
        return whole

    def full_state(self, local: Optional[Dict[str, np.ndarray]]) -> Optional[Dict[str, np.ndarray]]:
        """This rank's tensors -> whole ones: the split entries are gathered over the mp group (one AllReduce of
        them all, flattened). Collective: every rank of the mp group must call it with the same names."""
        if local is None:
            return None
        keys = sorted(k for k in local if self._owner(k) is not None)
        if not keys:
            return dict(local)
        padded = [self.padded(k, local[k]) for k in keys]
        flat = np.concatenate([p.reshape(-1).astype(np.float32) for p in padded])
        summed = ops.AllReduce(group=self.mp_group)(Tensor(flat)).asnumpy()
        out, start = dict(local), 0
        for key, p in zip(keys, padded):
            out[key] = summed[start:start + p.size].reshape(p.shape).astype(p.dtype)
            start += p.size
        return out


class CopyToModelParallel(nn.Cell):
    """Megatron's f: identity forward; backward the gradient all-reduced over the mp group."""

    def __init__(self, group: str):
        super().__init__()
        self.all_reduce = ops.AllReduce(group=group)

    def construct(self, x):
        return x

    def bprop(self, x, out, dout):
        return (self.all_reduce(dout),)


class ReduceFromModelParallel(nn.Cell):
    """Megatron's g: forward the partial sums all-reduced over the mp group; backward identity."""

    def __init__(self, group: str):
        super().__init__()
        self.all_reduce = ops.AllReduce(group=group)

    def construct(self, x):
        return self.all_reduce(x)

    def bprop(self, x, out, dout):
        return (dout,)


class GatherFromModelParallel(nn.Cell):
    """Concatenate every mp rank's (..., n) slice into (..., n * mp); backward this rank's part of the gradient."""

    def __init__(self, group: str, mp: int, mp_rank: int):
        super().__init__()
        self.all_reduce = ops.AllReduce(group=group)
        self.mp, self.mp_rank = mp, mp_rank

    def construct(self, x):
        zeros = ops.zeros(x.shape, x.dtype)  # not ops.zeros_like: sharing its graph with TokenNLL's bprop failed
        return self.all_reduce(ops.concat([x if m == self.mp_rank else zeros for m in range(self.mp)], -1))

    def bprop(self, x, out, dout):
        n = x.shape[-1]
        return (dout[..., self.mp_rank * n:(self.mp_rank + 1) * n],)


class ColumnParallelLinear(Linear):
    """This rank's output features of a Linear; the input's gradient is summed over mp (f), and with
    `gather_output` the outputs of all ranks are concatenated (the logits of a vocabulary-parallel head)."""

    def __init__(self, linear: Linear, tp: TensorParallel, gather_output: bool = False):
        super().__init__(linear.in_features, linear.out_features // tp.mp, linear.bias is not None,
                         param_dtype=linear.weight.dtype, compute_dtype=linear.compute_dtype)
        self.copy_in = CopyToModelParallel(tp.mp_group)
        self.gather = GatherFromModelParallel(tp.mp_group, tp.mp, tp.mp_rank) if gather_output else None

    def construct(self, x):
        lead = x.shape[:-1]
        x = ops.cast(self.copy_in(x), self.compute_dtype).reshape(-1, self.in_features)
        y = self.matmul(x, ops.cast(self.weight, self.compute_dtype))
        if self.bias is not None:
            y = y + ops.cast(self.bias, self.compute_dtype)
        if self.gather is not None:
            y = self.gather(y)
        return y.reshape(lead + (y.shape[-1],))


class RowParallelLinear(Linear):
    """This rank's input features of a Linear; partial products are all-reduced over mp (g), then the bias."""

    def __init__(self, linear: Linear, tp: TensorParallel):
        super().__init__(linear.in_features // tp.mp, linear.out_features, linear.bias is not None,
                         param_dtype=linear.weight.dtype, compute_dtype=linear.compute_dtype)
        self.reduce = ReduceFromModelParallel(tp.mp_group)

    def construct(self, x):
        lead = x.shape[:-1]
        x = ops.cast(x, self.compute_dtype).reshape(-1, self.in_features)
        y = self.reduce(self.matmul(x, ops.cast(self.weight, self.compute_dtype)))
        if self.bias is not None:
            y = y + ops.cast(self.bias, self.compute_dtype)
        return y.reshape(lead + (self.out_features,))


def _plain_linear(cell) -> bool:
    return type(cell) is Linear  # pylint: disable=unidiomatic-typecheck  (LoRA and other subclasses stay whole)


def _swap(tp: TensorParallel, owner: nn.Cell, path: str, attr: str, kind: int, gather_output: bool = False):
    """Replace `owner.attr` (a Linear at `path`) by its column/row-parallel slice holding this rank's weights."""
    old = getattr(owner, attr)
    features = old.out_features if kind == COLUMN else old.in_features
    if features % tp.mp:
        raise ValueError(f"parallel_config.model_parallel ({tp.mp}) must divide the {features} "
                         f"{'output' if kind == COLUMN else 'input'} features of {path}")
    new = ColumnParallelLinear(old, tp, gather_output) if kind == COLUMN else RowParallelLinear(old, tp)
    setattr(owner, attr, new)
    for local, param in (("weight", old.weight), ("bias", old.bias)):
        if param is None:
            continue
        value = param.asnumpy()
        # a column-parallel bias is split with the outputs; a row-parallel one is added after the reduce: whole
        dim = kind if local == "weight" else (0 if kind == COLUMN else None)
        if dim is not None:
            index = [slice(None)] * value.ndim
            index[dim] = tp.part(value.shape[dim])
            value = value[tuple(index)]
            tp.split[param.name], tp.full_shapes[param.name] = dim, tuple(param.shape)
        setattr(new, local, Parameter(Tensor(np.ascontiguousarray(value)), name=param.name,
                                      requires_grad=param.requires_grad))
        getattr(new, local).name = param.name  # assigning prefixes only the attribute name: keep the full one


def apply_tensor_parallel(network: nn.Cell, layout: MeshLayout, rank: int,
                          create_groups: bool = True) -> TensorParallel:
    """Cut a built model (full weights, e.g. just loaded) into this rank's tensor-parallel part, in place; the
    `TensorParallel` it returns is also set as `network.tensor_parallel` (the checkpoint hooks read it there)."""
    if layout.pp > 1 or layout.cp > 1:
        raise ValueError("tensor parallel in data-parallel mode combines only data_parallel and model_parallel; "
                         "set pipeline_stage and context_parallel to 1")
    tp = TensorParallel(layout.dp, layout.mp, rank)
    if create_groups:
        tp.create_groups()
    attentions = mlps = 0
    for path, cell in list(network.cells_and_names()):
        if isinstance(cell, CausalSelfAttention):
            projections = ("q_proj", "k_proj", "v_proj", "o_proj")
            if not all(_plain_linear(getattr(cell, p)) for p in projections):
                continue
            if cell.n_kv_heads % tp.mp:
                raise ValueError(f"parallel_config.model_parallel ({tp.mp}) must divide the {cell.n_kv_heads} "
                                 f"key/value heads of {path}")
            for attr in projections:
                _swap(tp, cell, f"{path}.{attr}", attr, ROW if attr == "o_proj" else COLUMN)
            cell.n_heads //= tp.mp  # the attention now sees only this rank's heads (n_rep is unchanged)
            cell.n_kv_heads //= tp.mp
            attentions += 1
        elif isinstance(cell, SwiGLU) and ".experts." not in f".{path}." and \
                all(_plain_linear(getattr(cell, p)) for p in ("gate_proj", "up_proj", "down_proj")):
            for attr in ("gate_proj", "up_proj", "down_proj"):
                _swap(tp, cell, f"{path}.{attr}", attr, ROW if attr == "down_proj" else COLUMN)
            mlps += 1
    head = getattr(network, "lm_head", None)
    if _plain_linear(head) and not getattr(network, "tie_word_embeddings", False):
        _swap(tp, network, "lm_head", "lm_head", COLUMN, gather_output=True)
    if not tp.split:
        raise ValueError(f"parallel_config.model_parallel ({tp.mp}): {type(network).__name__} has no attention "
                         f"or feed-forward block this tensor-parallel path splits (plain Linear projections)")
    if not layout.vocab_emb_dp:
        logger.info("parallel_config.vocab_emb_dp: False has no effect under tensor parallel in data-parallel mode: "
                    "the embedding table stays whole on every rank")
    network.tensor_parallel = tp
    logger.info("tensor parallel: dp %d x mp %d, rank %d holds mp slice %d: %d attention and %d feed-forward blocks"
                "%s split", tp.dp, tp.mp, rank, tp.mp_rank, attentions, mlps,
                " and the lm_head" if "lm_head.weight" in tp.split else "")
    return tp


def tensor_parallel_size(config) -> int:
    """parallel_config.model_parallel when it runs as explicit tensor parallel (use_parallel, data-parallel
    mode), else 1."""
    mode = (config.get("parallel") or {}).get("parallel_mode", 0)
    if not config.get("use_parallel") or mode not in (0, "data_parallel", None):
        return 1
    return MeshLayout.from_config(config.get("parallel_config"), None).mp


def data_parallel_rank(config, rank_id: int, device_num: int):
    """(index, count) of this worker's data shard: ranks of one mp group read the same batches."""
    mp = tensor_parallel_size(config)
    return rank_id // mp, device_num // mp


def gradient_reducer(weights, tp: TensorParallel, mean: bool):
    """Data-parallel gradient averaging (or summing) over the dp group only; identity when dp is 1."""
    if tp.dp == 1:
        return ops.identity
    # degree: DistributedGradReducer divides by the world size unless told the group's (measured: 4 workers, dp 2)
    return nn.DistributedGradReducer(weights, mean, degree=tp.dp, group=tp.dp_group)


def split_mask(weights, tp: TensorParallel) -> Tensor:
    """1 for each weight split over mp, else 0 (their squared gradient norms are summed over the mp group)."""
    return Tensor(np.array([1.0 if w.name in tp.split else 0.0 for w in weights], np.float32), ms.float32)
