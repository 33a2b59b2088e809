"""Causal self-attention with grouped-query heads, as plain matmul + softmax (runs on every backend)."""
import math
from typing import Optional

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops

from .layers import broadcast, is_small, row_reduce
from .rotary import apply_rotary, position_rotations, rotate_half_matrix

# Added to masked scores: half the most negative finite value per softmax dtype. Masked scores underflow to
# exactly 0 after exp, a fully masked row (padding) stays finite instead of becoming NaN as with -inf, and
# score + value cannot overflow to -inf (in fp16 the full minimum would, for any negative score).
_MASK_VALUE = {ms.float32: float(np.finfo(np.float32).min) / 2, ms.float16: float(np.finfo(np.float16).min) / 2,
               ms.bfloat16: -3.3895e38 / 2}


def mask_scores(att, allowed, mask_value):
    """att + (0 where `allowed`, `mask_value` elsewhere); `allowed` (bool) broadcasts to att's shape.

    An addition of an explicitly broadcast bias instead of `select(allowed, att, mask_value)`: on CPU the
    select's scalar and mask are expanded to full-size constants at compile time, and an implicitly broadcasting
    elementwise kernel keeps private buffers several times its output (figures: docs/performance.md). Unmasked
    scores are unchanged (att + 0); masked ones round to mask_value, so the softmax is the same as with the select.
    """
    if is_small(att.shape):  # a decode step: one select kernel instead of four (see layers.SMALL_TENSOR)
        return ops.select(allowed, att, mask_value)
    bias = ops.cast(ops.logical_not(allowed), att.dtype) * ops.cast(mask_value, att.dtype)
    return att + broadcast(bias, att.shape)


def causal_mask(seq_len: int):
    """(T, T) bool mask, True where query t may attend to key s (s <= t)."""
    pos = ops.arange(seq_len)
    return pos.reshape(-1, 1) >= pos.reshape(1, -1)


def write_kv_cache(cache, new, slot=None):
    """Store `new` (B, H, T, D) in `cache`, a (B, H, S, D) Parameter, in place; returns the updated cache.

    Prefill (`slot` None): slots [0, T) get `new` and the rest are zeroed (the generation runner reuses a
    cache for every call of the same batch and cache shape). Decode (`slot` a (1,) int32 index, T = 1): one
    ScatterNdUpdate writes the B x H rows at that slot, with the shapes static; a one-hot select rewrote the
    whole cache instead, a tenth of a decode step (docs/performance.md).
    """
    new = ops.cast(new, cache.dtype)
    B, H, T, D = new.shape
    if slot is None:
        return ops.assign(cache, ops.concat((new, ops.zeros((B, H, cache.shape[2] - T, D), cache.dtype)), 2))
    # (B, H, 1, 3) indices [row, head, slot]; identical in every layer, so the graph computes them once
    grid = ops.stack(ops.meshgrid(ops.arange(B, dtype=ms.int32), ops.arange(H, dtype=ms.int32), indexing="ij"), -1)
    index = ops.concat((grid.reshape(B, H, 1, 2), broadcast(slot.reshape(1, 1, 1, 1), (B, H, 1, 1))), -1)
    return ops.scatter_nd_update(cache, index, new)


def check_flash_attention(use_flash_attention: bool):
    """Flash attention is an Ascend fused kernel: refuse it elsewhere instead of silently using the slow path."""
    if not use_flash_attention:
        return
    device = ms.get_context("device_target")
    if device != "Ascend":
        raise ValueError(f"model_config.use_flash_attention=True needs an Ascend device (device_target is "
                         f"'{device}': the fused kernel has no {device} implementation); "
                         f"set use_flash_attention: False")
    raise ValueError("model_config.use_flash_attention=True is not implemented yet in this project; "
                     "set use_flash_attention: False (the matmul + softmax path runs on Ascend too)")


class Softmax(nn.Cell):
    """Softmax over the last axis whose backward broadcasts explicitly.

    MindSpore's own softmax gradient, (dout - sum(dout * y)) * y, subtracts a (..., 1) tensor from a full one;
    on CPU such an implicitly broadcasting kernel keeps private buffers several times its output (figures:
    docs/performance.md). Same formula, with the broadcast as its own kernel (layers.broadcast).
    """

    def construct(self, x):
        return ops.softmax(x, -1)

    def bprop(self, x, out, dout):
        inner = row_reduce(dout * out)
        return ((dout - broadcast(inner, out.shape)) * out,)


class CausalSelfAttention(nn.Cell):
    """Multi-head attention with n_kv_heads <= n_heads key/value heads (GQA) and rotary positions.

    The projections are passed in (any cells mapping (B, T, in) -> (B, T, out)), so adapters such as LoRA
    wrap them without the attention knowing. `q_norm`/`k_norm` (optional cells over the last axis, e.g.
    RMSNorm(head_dim)) normalize each head of q and k before RoPE, as Qwen3's qk-norm does.

    With a static KV cache (`kv_cache` = (k, v), Parameters of (B, n_kv_heads, S, hs) written in place, see
    `write_kv_cache`), `construct` also returns the cache: prefill (`slot` None) writes the T new keys at slots
    [0, T) and attends over them only; decode (`slot` a (1,) int32 slot index, T = 1) writes one key at that
    slot and attends over all S slots.
    """

    def __init__(self, n_heads: int, n_kv_heads: int, head_dim: int, q_proj: nn.Cell, k_proj: nn.Cell,
                 v_proj: nn.Cell, o_proj: nn.Cell, softmax_dtype: ms.dtype = ms.float32,
                 use_flash_attention: bool = False, q_norm: Optional[nn.Cell] = None,
                 k_norm: Optional[nn.Cell] = None):
        super().__init__()
        if n_heads % n_kv_heads:
            raise ValueError(f"num_heads ({n_heads}) must be a multiple of n_kv_heads ({n_kv_heads})")
        check_flash_attention(use_flash_attention)
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads
        self.n_rep = n_heads // n_kv_heads
        self.head_dim = head_dim
        self.scale = 1.0 / math.sqrt(head_dim)
        self.softmax_dtype = softmax_dtype
        self.mask_value = Tensor(_MASK_VALUE[softmax_dtype], softmax_dtype)
        self.q_proj = q_proj
        self.k_proj = k_proj
        self.v_proj = v_proj
        self.o_proj = o_proj
        self.q_norm = q_norm
        self.k_norm = k_norm
        self.scores = ops.BatchMatMul(transpose_b=True)
        self.weighted_sum = ops.BatchMatMul()
        self.softmax = Softmax()
        self.rotation = rotate_half_matrix(head_dim)
        self.identity = Tensor(np.eye(head_dim, dtype=np.float32))
        self.rotate = ops.BatchMatMul()

    def construct(self, x, cos, sin, mask, kv_cache=None, slot=None):
        """x (B, T, C); cos, sin (T, hs) or (B, 1, T, hs); mask bool (T, S) or (B, T, S), True = may attend.

        Returns y (B, T, C), or (y, (k_cache, v_cache)) when `kv_cache` is given.
        """
        B, T, _ = x.shape
        nh, nkv, hs = self.n_heads, self.n_kv_heads, self.head_dim
        q = self.q_proj(x).reshape(B, T, nh, hs)
        k = self.k_proj(x).reshape(B, T, nkv, hs)
        if self.q_norm is not None:
            q = self.q_norm(q)
        if self.k_norm is not None:
            k = self.k_norm(k)
        q = q.transpose(0, 2, 1, 3)  # (B, nh, T, hs)
        k = k.transpose(0, 2, 1, 3)  # (B, nkv, T, hs)
        v = self.v_proj(x).reshape(B, T, nkv, hs).transpose(0, 2, 1, 3)  # (B, nkv, T, hs)
        cos, sin = ops.cast(cos, q.dtype), ops.cast(sin, q.dtype)
        if T == 1 and cos.ndim == 4:  # a decode step: per-row rotation matrices (see position_rotations)
            rot = position_rotations(cos, sin, ops.cast(self.identity, q.dtype), ops.cast(self.rotation, q.dtype))
            # the softmax scale rides on q's rotation: one Mul per step (layers share it), not one per layer
            q = self.rotate(q.reshape(B, nh, hs), rot * self.scale).reshape(B, nh, 1, hs)
            k = self.rotate(k.reshape(B, nkv, hs), rot).reshape(B, nkv, 1, hs)
        else:
            q = apply_rotary(q, cos, sin, self.rotation) * self.scale
            k = apply_rotary(k, cos, sin, self.rotation)
        if kv_cache is None:
            return self._attend(q, k, v, mask)
        k_cache, v_cache = write_kv_cache(kv_cache[0], k, slot), write_kv_cache(kv_cache[1], v, slot)
        if slot is None:  # prefill attends over the prompt's own keys
            return self._attend(q, k, v, mask), (k_cache, v_cache)
        y = self._attend(q, ops.cast(k_cache, k.dtype), ops.cast(v_cache, v.dtype), mask)
        return y, (k_cache, v_cache)

    def _attend(self, q, k, v, mask):
        """softmax(q k^T + mask) v for q (B, nh, T, hs) pre-scaled and k, v (B, nkv, S, hs); returns (B, T, C)."""
        B, nh, T, hs = q.shape
        nkv = self.n_kv_heads
        # GQA without copying k/v: the n_rep query heads that share kv head g are consecutive (head h uses
        # kv head h // n_rep, as Hugging Face's repeat_kv), so fold them into the query-time axis.
        q = q.reshape(B, nkv, self.n_rep * T, hs)
        att = self.scores(q, k)  # (B, nkv, n_rep*T, S)
        S = att.shape[-1]
        att = ops.cast(att, self.softmax_dtype).reshape(B, nkv, self.n_rep, T, S)
        allowed = mask.reshape((-1, 1, 1) + mask.shape[-2:])  # (1 or B, 1, 1, T, S)
        att = self.softmax(mask_scores(att, allowed, self.mask_value))
        att = ops.cast(att, v.dtype).reshape(B, nkv, self.n_rep * T, S)
        y = self.weighted_sum(att, v)  # (B, nkv, n_rep*T, hs)
        y = y.reshape(B, nh, T, hs).transpose(0, 2, 1, 3).reshape(B, T, nh * hs)  # (B, T, nh*hs)
        return self.o_proj(y)
