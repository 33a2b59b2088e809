"""Basic layers with CPU kernels: Linear, Embedding, RMSNorm and the SwiGLU feed-forward."""
import math
from typing import Optional

import mindspore as ms
from mindspore import Parameter, nn, ops
from mindspore.common.initializer import Normal, initializer


# Up to this many elements, a tensor is "small" (a decode step's activations): the private buffers an implicitly
# broadcasting CPU kernel keeps are then negligible, while each extra broadcast kernel costs time in a decode
# step, which is bound by per-kernel cost. Larger tensors broadcast explicitly (see RMSNorm).
SMALL_TENSOR = 1 << 16


def is_small(shape) -> bool:
    """Whether a tensor of `shape` is small (see SMALL_TENSOR); constant at graph compile time."""
    size = 1
    for dim in shape:
        size *= dim
    return size <= SMALL_TENSOR


def broadcast(t, shape):
    """`t` broadcast to `shape` as a new tensor, by Tile: on CPU BroadcastTo makes the same copy several times
    slower (docs/performance.md, "Op costs behind code choices")."""
    t = t.reshape((1,) * (len(shape) - t.ndim) + t.shape)
    return ops.tile(t, tuple(size // dim for size, dim in zip(shape, t.shape)))


def expand_to(t, shape):
    """`t` broadcast explicitly to `shape` for a large tensor (an implicitly broadcasting elementwise kernel
    keeps private buffers several times its output on CPU; an explicit copy + a same-shape op only borrows the memory
    pool), and `t` as it is for a small one (one kernel fewer; see SMALL_TENSOR)."""
    return t if is_small(shape) else broadcast(t, shape)


def row_reduce(x, reduce=ops.sum):
    """`reduce` (ops.sum or ops.mean) over the last axis, kept as size 1, computed as a 2-D reduction: on CPU
    MindSpore's last-axis reduction of a 4-D tensor (and a full reduction to a scalar) is several times slower
    than the same data reshaped to 2-D (docs/performance.md, "Op costs behind code choices")."""
    return reduce(x.reshape(-1, x.shape[-1]), -1).reshape(x.shape[:-1] + (1,))


class Linear(nn.Cell):
    """y = x W^T + b with W stored (out, in) like torch.nn.Linear, computed in `compute_dtype`."""

    def __init__(self, in_features: int, out_features: int, has_bias: bool = False, init_std: float = 0.02,
                 param_dtype: ms.dtype = ms.float32, compute_dtype: ms.dtype = ms.float32):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.compute_dtype = compute_dtype
        self.weight = Parameter(initializer(Normal(init_std), (out_features, in_features), param_dtype), name="weight")
        self.bias = Parameter(initializer("zeros", (out_features,), param_dtype), name="bias") if has_bias else None
        self.matmul = ops.MatMul(transpose_b=True)

    def construct(self, x):
        lead = x.shape[:-1]
        # MatMul is 2-D; folding the leading axes keeps one GEMM per call on every backend.
        x = ops.cast(x, self.compute_dtype).reshape(-1, self.in_features)
        y = self.matmul(x, ops.cast(self.weight, self.compute_dtype))
        if self.bias is not None:
            y = y + ops.cast(self.bias, self.compute_dtype)
        return y.reshape(lead + (self.out_features,))


class Embedding(nn.Cell):
    """Token embedding table (vocab, dim) looked up with Gather (mint.embedding has no CPU kernel)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, init_std: float = 0.02,
                 param_dtype: ms.dtype = ms.float32):
        super().__init__()
        self.weight = Parameter(initializer(Normal(init_std), (num_embeddings, embedding_dim), param_dtype),
                                name="weight")
        self.gather = ops.Gather()  # a primitive, so semi-auto parallel can shard the table (parallel/apply.py)

    def construct(self, input_ids):
        return self.gather(self.weight, input_ids, 0)


class RMSNorm(nn.Cell):
    """Root-mean-square norm; statistics in `compute_dtype` (fp32) whatever the activation dtype."""

    def __init__(self, dim: int, eps: float = 1e-5, param_dtype: ms.dtype = ms.float32,
                 compute_dtype: ms.dtype = ms.float32):
        super().__init__()
        self.eps = eps
        self.compute_dtype = compute_dtype
        self.weight = Parameter(initializer("ones", (dim,), param_dtype), name="weight")

    def construct(self, x):
        dtype = x.dtype
        x = ops.cast(x, self.compute_dtype)
        x = x * expand_to(ops.rsqrt(row_reduce(ops.square(x), ops.mean) + self.eps), x.shape)
        return ops.cast(x * expand_to(ops.cast(self.weight, self.compute_dtype), x.shape), dtype)


def llama_ffn_hidden_size(hidden_size: int, multiple_of: int = 256,
                          ffn_dim_multiplier: Optional[float] = None) -> int:
    """SwiGLU width as Llama derives it: 2/3 of 4*hidden (same FLOPs as a 4x GELU MLP), scaled, rounded up."""
    width = int(2 * (4 * hidden_size) / 3)
    if ffn_dim_multiplier is not None:
        width = int(ffn_dim_multiplier * width)
    return multiple_of * math.ceil(width / multiple_of)


class SwiGLU(nn.Cell):
    """Gated feed-forward down(silu(gate(x)) * up(x)); projections are passed in so adapters can wrap them."""

    def __init__(self, gate_proj: nn.Cell, up_proj: nn.Cell, down_proj: nn.Cell):
        super().__init__()
        self.gate_proj = gate_proj
        self.up_proj = up_proj
        self.down_proj = down_proj

    def construct(self, x):
        return self.down_proj(ops.silu(self.gate_proj(x)) * self.up_proj(x))
