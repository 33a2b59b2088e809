"""CausalSelfAttention's static KV cache and optional qk-norm, in GRAPH mode."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn, ops

from mindformers.modules import CausalSelfAttention, Linear, RMSNorm, RotaryEmbedding, causal_mask

pytestmark = pytest.mark.usefixtures("graph_mode")

NH, NKV, HS, DIM, S = 4, 2, 8, 32, 16


def make_attention(qk_norm: bool, seed: int = 0):
    ms.set_seed(seed)
    norms = {}
    if qk_norm:
        norms = dict(q_norm=RMSNorm(HS, 1e-6), k_norm=RMSNorm(HS, 1e-6))
        for norm in norms.values():
            norm.weight.set_data(Tensor(np.random.default_rng(seed).uniform(0.5, 2, HS).astype(np.float32)))
    return CausalSelfAttention(NH, NKV, HS, Linear(DIM, NH * HS, False, 0.3), Linear(DIM, NKV * HS, False, 0.3),
                               Linear(DIM, NKV * HS, False, 0.3), Linear(NH * HS, DIM, False, 0.3), **norms)


class Full(nn.Cell):
    def __init__(self, attn):
        super().__init__()
        self.attn, self.rope = attn, RotaryEmbedding(HS, 64)

    def construct(self, x):
        cos, sin = self.rope(x.shape[1])
        return self.attn(x, cos, sin, causal_mask(x.shape[1]))


class Cached(nn.Cell):
    """The attention over a static cache held as Parameters (as the generation runner holds it)."""

    def __init__(self, attn, batch, slots):
        super().__init__()
        self.attn, self.rope = attn, RotaryEmbedding(HS, 64)
        self.cache = ms.ParameterTuple([ms.Parameter(ops.zeros((batch, NKV, slots, HS), ms.float32), name=name)
                                        for name in ("k_cache", "v_cache")])

    def construct(self, x, positions, mask, slot=None):
        cos = ops.gather(self.rope.cos, positions, 0).expand_dims(1)
        sin = ops.gather(self.rope.sin, positions, 0).expand_dims(1)
        y, _ = self.attn(x, cos, sin, mask, (self.cache[0], self.cache[1]), slot)
        return y


@pytest.mark.parametrize("qk_norm", [False, True])
def test_prefill_then_decode_equals_full_attention(qk_norm):
    attn = make_attention(qk_norm)
    x = np.random.default_rng(1).normal(size=(2, 7, DIM)).astype(np.float32)
    full = Full(attn)(Tensor(x)).asnumpy()
    cached = Cached(attn, 2, S)
    cached.cache[0].set_data(Tensor(np.full((2, NKV, S, HS), 7.0, np.float32)))  # left over from an earlier run
    P = 4
    pos = np.tile(np.arange(P, dtype=np.int32), (2, 1))
    mask = np.tile(np.tril(np.ones((P, P), bool)), (2, 1, 1))
    y = cached(Tensor(x[:, :P]), Tensor(pos), Tensor(mask))
    np.testing.assert_allclose(y.asnumpy(), full[:, :P], atol=1e-5)
    assert np.abs(cached.cache[0].asnumpy()[:, :, P:]).max() == 0  # prefill clears what it does not write
    for t in range(P, 7):
        step_mask = np.tile((np.arange(S) <= t)[None, None], (2, 1, 1))
        y = cached(Tensor(x[:, t:t + 1]), Tensor(np.full((2, 1), t, np.int32)), Tensor(step_mask),
                   Tensor(np.array([t], np.int32)))
        np.testing.assert_allclose(y.asnumpy()[:, 0], full[:, t], atol=1e-5)
    k_cache, v_cache = (c.asnumpy() for c in cached.cache)
    assert np.abs(k_cache[:, :, :7]).min() > 0 and np.abs(v_cache[:, :, :7]).min() > 0  # every row and head
    assert np.abs(k_cache[:, :, 7:]).max() == 0 and np.abs(v_cache[:, :, 7:]).max() == 0  # unwritten slots


def test_qk_norm_is_per_head_before_rope():
    # RMSNorm makes each head's q and k independent of its scale, so scaling one head's rows changes nothing.
    x = Tensor(np.random.default_rng(2).normal(size=(1, 5, DIM)).astype(np.float32))
    with_norm, without = make_attention(True), make_attention(False)
    before = Full(with_norm)(x).asnumpy(), Full(without)(x).asnumpy()
    for attn in (with_norm, without):
        for proj in (attn.q_proj, attn.k_proj):
            w = proj.weight.asnumpy().copy()
            w[:HS] *= 3.0  # head 0 only
            proj.weight.set_data(Tensor(w))
    np.testing.assert_allclose(Full(with_norm)(x).asnumpy(), before[0], atol=1e-5)
    assert np.abs(Full(without)(x).asnumpy() - before[1]).max() > 1e-3
