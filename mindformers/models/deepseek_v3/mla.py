"""Multi-head Latent Attention (DeepSeek-V2/V3): keys and values come from one small per-token latent.

Per token, `kv_a_proj_with_mqa` gives a latent of kv_lora_rank dims (RMS-normed by `kv_a_layernorm`) plus one
rotary key of qk_rope_head_dim dims shared by all heads; `kv_b_proj` expands the latent into each head's
non-rotary key (qk_nope_head_dim) and value (v_head_dim). Queries are `q_proj(x)`, or the low-rank
`q_b_proj(q_a_layernorm(q_a_proj(x)))`, split per head into a non-rotary and a rotary part.
"""
from typing import Optional

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from mindformers.modules import apply_rotary
from mindformers.modules.attention import _MASK_VALUE, Softmax, mask_scores, write_kv_cache


def deinterleave_index(rope_dim: int) -> Tensor:
    """Index that reorders interleaved rotary pairs (x0, x1), (x2, x3), ... into halves (x0, x2, ..; x1, x3, ..).

    DeepSeek checkpoints rotate adjacent pairs; after this reordering the rotation is our half-split
    `apply_rotary`. q and k are reordered alike, so their dot products are unchanged.
    """
    return Tensor(np.concatenate([np.arange(0, rope_dim, 2), np.arange(1, rope_dim, 2)]).astype(np.int32))


class MultiLatentAttention(nn.Cell):
    """Causal MLA over (B, T, C). Projections are passed in, as for CausalSelfAttention.

    With a static cache, `kv_cache` is (latent (B, 1, S, kv_lora_rank), rotated key (B, 1, S, qk_rope_head_dim))
    per layer: the compressed latent is cached, not the per-head keys and values, and every call expands the
    cached latents with `kv_b_proj` (S x kv_lora_rank x heads x (nope + v) multiply-adds per decode step; the
    "absorbed" form that folds kv_b_proj into q and o is future work). The caches are Parameters written in
    place (`write_kv_cache`). Prefill (`slot` None) writes slots [0, T) and attends over the T new tokens;
    decode (`slot` a (1,) int32 slot index, T = 1) writes one slot and attends over all S slots, exactly as
    CausalSelfAttention does.
    """

    def __init__(self, n_heads: int, qk_nope_head_dim: int, qk_rope_head_dim: int, v_head_dim: int,
                 kv_lora_rank: int, scale: float, q_proj: Optional[nn.Cell], q_a_proj: Optional[nn.Cell],
                 q_a_layernorm: Optional[nn.Cell], q_b_proj: Optional[nn.Cell], kv_a_proj_with_mqa: nn.Cell,
                 kv_a_layernorm: nn.Cell, kv_b_proj: nn.Cell, o_proj: nn.Cell, rope_interleave: bool = True,
                 softmax_dtype: ms.dtype = ms.float32):
        super().__init__()
        if (q_proj is None) == (q_b_proj is None):
            raise ValueError("MultiLatentAttention needs either q_proj or q_a_proj/q_a_layernorm/q_b_proj")
        self.n_heads = n_heads
        self.nope_dim, self.rope_dim, self.v_dim = qk_nope_head_dim, qk_rope_head_dim, v_head_dim
        self.kv_lora_rank = kv_lora_rank
        self.scale = scale
        self.softmax_dtype = softmax_dtype
        self.mask_value = Tensor(_MASK_VALUE[softmax_dtype], softmax_dtype)
        self.q_proj = q_proj
        self.q_a_proj = q_a_proj
        self.q_a_layernorm = q_a_layernorm
        self.q_b_proj = q_b_proj
        self.kv_a_proj_with_mqa = kv_a_proj_with_mqa
        self.kv_a_layernorm = kv_a_layernorm
        self.kv_b_proj = kv_b_proj
        self.o_proj = o_proj
        self.rope_order = deinterleave_index(qk_rope_head_dim) if rope_interleave else None
        self.scores = ops.BatchMatMul(transpose_b=True)
        self.softmax = Softmax()
        self.weighted_sum = ops.BatchMatMul()

    def _rotate(self, x, cos, sin):
        if self.rope_order is not None:
            x = ops.gather(x, self.rope_order, 3)  # x is (B, heads, T, rope)
        return apply_rotary(x, ops.cast(cos, x.dtype), ops.cast(sin, x.dtype))

    def construct(self, x, cos, sin, mask, kv_cache=None, slot=None):
        """x (B, T, C); cos, sin (T, rope) or (B, 1, T, rope); mask bool (T, S) or (B, T, S), True = may attend.

        Returns y (B, T, C), or (y, (latent_cache, rope_key_cache)) when `kv_cache` is given.
        """
        B, T, _ = x.shape
        nh = self.n_heads
        q = self.q_proj(x) if self.q_proj is not None else self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        q = q.reshape(B, T, nh, self.nope_dim + self.rope_dim).transpose(0, 2, 1, 3)  # (B, nh, T, nope+rope)
        q_nope, q_rot = q[..., :self.nope_dim], self._rotate(q[..., self.nope_dim:], cos, sin)
        kv = self.kv_a_proj_with_mqa(x)  # (B, T, rank + rope)
        latent = self.kv_a_layernorm(kv[..., :self.kv_lora_rank]).reshape(B, 1, T, self.kv_lora_rank)
        k_rot = self._rotate(kv[..., self.kv_lora_rank:].reshape(B, 1, T, self.rope_dim), cos, sin)
        if kv_cache is None:
            return self._attend(q_nope, q_rot, latent, k_rot, mask)
        latent_cache = write_kv_cache(kv_cache[0], latent, slot)
        rope_cache = write_kv_cache(kv_cache[1], k_rot, slot)
        if slot is None:  # prefill attends over the prompt's own keys
            return self._attend(q_nope, q_rot, latent, k_rot, mask), (latent_cache, rope_cache)
        y = self._attend(q_nope, q_rot, ops.cast(latent_cache, latent.dtype), ops.cast(rope_cache, k_rot.dtype),
                         mask)
        return y, (latent_cache, rope_cache)

    def _attend(self, q_nope, q_rot, latent, k_rot, mask):
        """q_nope (B, nh, T, nope), q_rot (B, nh, T, rope), latent (B, 1, S, rank), k_rot (B, 1, S, rope)."""
        B, nh, T, _ = q_nope.shape
        S = latent.shape[2]
        kv = self.kv_b_proj(latent.reshape(B, S, self.kv_lora_rank)).reshape(B, S, nh, self.nope_dim + self.v_dim)
        kv = kv.transpose(0, 2, 1, 3)  # (B, nh, S, nope+v)
        k_nope, v = kv[..., :self.nope_dim], kv[..., self.nope_dim:]
        # q.k = q_nope.k_nope + q_rot.k_rot; the rotary key is shared by all heads, so fold heads into time
        # instead of copying it per head.
        att = self.scores(q_nope, k_nope)  # (B, nh, T, S)
        att = att + self.scores(q_rot.reshape(B, 1, nh * T, self.rope_dim), k_rot).reshape(B, nh, T, S)
        att = ops.cast(att * self.scale, self.softmax_dtype)
        allowed = mask.reshape((-1, 1) + mask.shape[-2:])  # (1 or B, 1, T, S)
        att = ops.cast(self.softmax(mask_scores(att, allowed, self.mask_value)), v.dtype)
        y = self.weighted_sum(att, v)  # (B, nh, T, v)
        return self.o_proj(y.transpose(0, 2, 1, 3).reshape(B, T, nh * self.v_dim))
