"""The cells of tensor parallelism (see tensor_parallel.py): this rank's place in the dp x mp grid, Megatron's f and g
collectives with written-out backwards, column/row-parallel linears, and the vocabulary-parallel embedding, head
and cross-entropy. Every collective is an AllReduce (sum): on CPU MindSpore 2.10 has no other in created groups.
"""
from typing import Dict, Optional

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops

from ..modules.layers import Embedding, Linear

COLUMN, ROW = 0, 1  # the weight dim split over mp: output features (column parallel) or input features (row)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


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
        """This rank's part of a dim of `size` split over mp (the last part may reach into padding)."""
        step = ceil_div(size, self.mp)
        return slice(self.mp_rank * step, (self.mp_rank + 1) * step)

    def cut(self, value: np.ndarray, dim: int) -> np.ndarray:
        """This rank's part of `value` along `dim`; a dim mp does not divide is first padded with zeros at its end."""
        size = value.shape[dim]
        padding = ceil_div(size, self.mp) * self.mp - size
        if padding:
            widths = [(0, 0)] * value.ndim
            widths[dim] = (0, padding)
            value = np.pad(value, widths)
        index = [slice(None)] * value.ndim
        index[dim] = self.part(size)
        return np.ascontiguousarray(value[tuple(index)])

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
            out[key] = self.cut(value, self.split[name])
        return out

    def padded(self, key: str, value: np.ndarray) -> np.ndarray:
        """This rank's slice of `key` placed in zeros of the whole tensor's shape (the sum over mp ranks is the
        whole; rows of vocabulary padding are dropped)."""
        name = self._owner(key)
        dim = self.split[name]
        step = value.shape[dim]
        shape = list(value.shape)
        shape[dim] = step * self.mp
        whole = np.zeros(shape, value.dtype)
        index = [slice(None)] * value.ndim
        index[dim] = slice(self.mp_rank * step, (self.mp_rank + 1) * step)
        whole[tuple(index)] = value
        index[dim] = slice(0, self.full_shapes[name][dim])
        return whole[tuple(index)]

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
    """This rank's output features of a Linear; the input's gradient is summed over mp (f). With `gather_output`
    the outputs of all ranks are concatenated (cut to the Linear's `out_features` when padded), in training only
    while `gather_in_training` is set: a vocabulary-parallel loss takes this rank's logits as they are."""

    def __init__(self, linear: Linear, tp: TensorParallel, gather_output: bool = False):
        super().__init__(linear.in_features, ceil_div(linear.out_features, tp.mp), linear.bias is not None,
                         param_dtype=linear.weight.dtype, compute_dtype=linear.compute_dtype)
        self.copy_in = CopyToModelParallel(tp.mp_group)
        self.gather = GatherFromModelParallel(tp.mp_group, tp.mp, tp.mp_rank) if gather_output else None
        self.gather_in_training = True
        self.whole_out = linear.out_features

    def construct(self, x):
        lead = x.shape[:-1]
        x = ops.cast(self.copy_in(x), self.compute_dtype).reshape(-1, self.in_features)
        y = self.matmul(x, ops.cast(self.weight, self.compute_dtype))
        if self.bias is not None:
            y = y + ops.cast(self.bias, self.compute_dtype)
        if self.gather is not None and (self.gather_in_training or not self.training):
            y = self.gather(y)
            if y.shape[-1] > self.whole_out:
                y = y[:, :self.whole_out]
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


class VocabParallelEmbedding(Embedding):
    """This rank's rows of the embedding table [start, start + rows): ids outside them give zeros, and the
    lookups of all ranks are summed (g), so every rank gets every token's whole row (exact: x + 0 = x)."""

    def __init__(self, embedding: Embedding, tp: TensorParallel):
        vocab, dim = embedding.weight.shape
        rows = ceil_div(vocab, tp.mp)
        super().__init__(rows, dim, param_dtype=embedding.weight.dtype)
        self.start, self.rows = tp.mp_rank * rows, rows
        self.tile = ops.Tile()  # the primitive: see VocabParallelNLL
        self.reduce = ReduceFromModelParallel(tp.mp_group)

    def construct(self, input_ids):
        local = input_ids - self.start
        inside = ops.logical_and(local >= 0, local < self.rows)
        # ids of other ranks look up row 0 and are zeroed: their gradient there is 0 * dout, exactly nothing
        x = self.gather(self.weight, local * ops.cast(inside, local.dtype), 0)
        x = x * self.tile(ops.cast(inside, x.dtype).expand_dims(-1), (1,) * (x.ndim - 1) + (x.shape[-1],))
        return self.reduce(x)


class VocabParallelHeadMatMul(nn.Cell):
    """The tied lm_head's matmul on this rank's rows of the shared embedding table: hidden (N, C) x rows (R, C)^T
    -> this rank's logits (N, R), the hidden's gradient summed over mp (f); gathered (and padding cut) outside
    training, or always while `gather_in_training` is set."""

    def __init__(self, tp: TensorParallel, vocab: int):
        super().__init__()
        self.copy_in = CopyToModelParallel(tp.mp_group)
        self.matmul = ops.MatMul(transpose_b=True)
        self.gather = GatherFromModelParallel(tp.mp_group, tp.mp, tp.mp_rank)
        self.gather_in_training = True
        self.vocab = vocab

    def construct(self, x, weight):
        y = self.matmul(self.copy_in(x), weight)
        if self.gather_in_training or not self.training:
            y = self.gather(y)
            if y.shape[-1] > self.vocab:
                y = y[:, :self.vocab]
        return y


class VocabParallelNLL(nn.Cell):
    """-log softmax(logits)[target] per row for logits split over the vocabulary: this rank's logits (N, V_r) of
    the vocabulary entries [start, start + V_r), targets (N, 1) int32 ids of the whole vocabulary -> (N, 1),
    the same on every mp rank. Three row values are all-reduced (max, sum of exponentials, target logit); the
    backward is the closed form (softmax - onehot) * dout on this rank's columns, like models.base.TokenNLL.

    CPU's AllReduce sums only ("AllReduce only support reduce sum on CPU, but got max"), so the row max is exact
    another way: each rank's row maxima go into its own column of zeros, the (N, mp) table is summed, and its row
    max taken. Primitive instances, not functional ops: the function graph of ops.tile shared by a forward and a
    bprop (here or attention's softmax) failed to compile ("The func graph is empty")."""

    def __init__(self, tp: TensorParallel, start: int, columns: int):
        super().__init__()
        self.start, self.columns, self.mp = start, columns, tp.mp
        own = np.zeros((1, tp.mp), np.float32)
        own[0, tp.mp_rank] = 1.0
        self.own_column = Tensor(own)  # x * 1 and x * 0 are exact
        self.all_reduce = ops.AllReduce(group=tp.mp_group)
        self.row_max, self.row_sum = ops.ReduceMax(keep_dims=True), ops.ReduceSum(keep_dims=True)
        self.tile, self.exp, self.log, self.cast = ops.Tile(), ops.Exp(), ops.Log(), ops.Cast()
        self.logical_and, self.concat, self.gather_d = ops.LogicalAnd(), ops.Concat(1), ops.GatherD()
        # the backward's own instances
        self.grad_all_reduce_max = ops.AllReduce(group=tp.mp_group)
        self.grad_all_reduce = ops.AllReduce(group=tp.mp_group)
        self.grad_row_max, self.grad_row_sum = ops.ReduceMax(keep_dims=True), ops.ReduceSum(keep_dims=True)
        self.grad_tile, self.grad_exp, self.grad_cast = ops.Tile(), ops.Exp(), ops.Cast()
        self.grad_and, self.grad_concat, self.grad_scatter_add = ops.LogicalAnd(), ops.Concat(1), ops.TensorScatterAdd()

    def construct(self, logits, targets):
        # less the whole vocabulary's row max: any common shift gives the same softmax, this one cannot overflow
        maxima = self.all_reduce(self.tile(self.row_max(logits, -1), (1, self.mp)) * self.own_column)
        shifted = logits - self.tile(self.row_max(maxima, -1), (1, self.columns))
        local = targets - self.start
        inside = self.logical_and(local >= 0, local < self.columns)  # this rank holds the target
        picked = self.gather_d(shifted, 1, local * self.cast(inside, local.dtype)) * self.cast(inside, ms.float32)
        sums = self.all_reduce(self.concat((self.row_sum(self.exp(shifted), -1), picked)))  # one AllReduce for both
        return self.log(sums[:, :1]) - sums[:, 1:]

    def bprop(self, logits, targets, out, dout):
        maxima = self.grad_all_reduce_max(self.grad_tile(self.grad_row_max(logits, -1), (1, self.mp)) * self.own_column)
        exp = self.grad_exp(logits - self.grad_tile(self.grad_row_max(maxima, -1), (1, self.columns)))
        grad = exp * self.grad_tile(dout / self.grad_all_reduce(self.grad_row_sum(exp, -1)), (1, self.columns))
        local = targets - self.start
        inside = self.grad_and(local >= 0, local < self.columns)
        rows = ops.arange(targets.shape[0], dtype=targets.dtype).reshape(-1, 1)
        index = self.grad_concat((rows, local * self.grad_cast(inside, local.dtype)))
        # x + (-d) equals x - d exactly; TensorScatterSub is deprecated from MindSpore 2.10
        grad = self.grad_scatter_add(grad, index, -(dout * self.grad_cast(inside, ms.float32)).reshape(-1))
        return grad, ops.zeros_like(targets)


class VocabParallelCrossEntropy(nn.Cell):
    """models.base.causal_lm_loss for this rank's logits (B, T, V_r) of a vocabulary-parallel head: the mean
    cross-entropy over targets != ignore_index, the same value on every mp rank. Padding columns score -1e30."""

    def __init__(self, tp: TensorParallel, vocab: int, ignore_index: int):
        super().__init__()
        per_rank = ceil_div(vocab, tp.mp)
        start = tp.mp_rank * per_rank
        self.columns = min(per_rank, vocab - start)  # real vocabulary entries; the last rank may hold padding
        self.ignore_index = ignore_index
        self.nll = VocabParallelNLL(tp, start, per_rank)
        # Every rank adds the bias when the vocabulary is padded (zeros where it holds no padding): the ranks'
        # graphs stay alike, so their collectives run in the same order. exp(-1e30 - max) is 0: no probability
        # and no gradient reach the padding.
        self.padding = None
        if per_rank * tp.mp != vocab:
            bias = np.zeros((1, per_rank), np.float32)
            bias[:, self.columns:] = -1e30
            self.padding = Tensor(bias)
        self.tile = ops.Tile()

    def construct(self, logits, targets):
        B, T = targets.shape
        logits = ops.cast(logits, ms.float32).reshape(B * T, -1)
        if self.padding is not None:
            logits = logits + self.tile(self.padding, (logits.shape[0], 1))
        valid = targets != self.ignore_index
        mask = ops.cast(valid, ms.float32)
        # masked positions point at id 0 and are zeroed by `mask` (their gradient too)
        safe = ops.cast(targets * ops.cast(valid, targets.dtype), ms.int32).reshape(-1, 1)
        nll = self.nll(logits, safe).reshape(B, T)
        return (nll * mask).sum() / ops.maximum(mask.sum(), 1.0)


