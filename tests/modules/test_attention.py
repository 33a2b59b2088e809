"""CausalSelfAttention (GQA, rotary, causal mask) against a numpy reference, in GRAPH mode."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

from mindformers.modules import CausalSelfAttention, Linear, RotaryEmbedding, causal_mask


pytestmark = pytest.mark.usefixtures("graph_mode")


class Block(nn.Cell):
    """Attention plus the rotary tables and causal mask a model would hand it."""

    def __init__(self, n_heads, n_kv_heads, head_dim, dim=32, use_flash_attention=False):
        super().__init__()
        self.attn = CausalSelfAttention(
            n_heads, n_kv_heads, head_dim, Linear(dim, n_heads * head_dim, True, 0.2),
            Linear(dim, n_kv_heads * head_dim, True, 0.2), Linear(dim, n_kv_heads * head_dim, True, 0.2),
            Linear(n_heads * head_dim, dim, False, 0.2), use_flash_attention=use_flash_attention)
        self.rope = RotaryEmbedding(head_dim, 64)

    def construct(self, x, mask=None):
        T = x.shape[1]
        cos, sin = self.rope(T)
        return self.attn(x, cos, sin, causal_mask(T) if mask is None else mask)


def np_attention(block, x, mask):
    """Textbook GQA: repeat each kv head n_rep times, full scores, -inf where masked, softmax."""
    a = block.attn
    p = {n.split(".")[-2] + "." + n.split(".")[-1]: v.asnumpy() for n, v in block.parameters_and_names()}
    B, T, _ = x.shape
    nh, nkv, hs = a.n_heads, a.n_kv_heads, a.head_dim

    def proj(name, heads):
        y = x @ p[name + ".weight"].T + p.get(name + ".bias", 0)
        return y.reshape(B, T, heads, hs).transpose(0, 2, 1, 3)

    cos, sin = (t.asnumpy()[:T] for t in (block.rope.cos, block.rope.sin))

    def rope(t):
        half = np.concatenate([-t[..., hs // 2:], t[..., :hs // 2]], -1)
        return t * cos + half * sin

    q, k, v = rope(proj("q_proj", nh)), rope(proj("k_proj", nkv)), proj("v_proj", nkv)
    k, v = np.repeat(k, nh // nkv, axis=1), np.repeat(v, nh // nkv, axis=1)
    att = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hs)
    att = np.where(mask, att, -np.inf)
    att = np.exp(att - att.max(-1, keepdims=True))
    att /= att.sum(-1, keepdims=True)
    y = (att @ v).transpose(0, 2, 1, 3).reshape(B, T, nh * hs)
    return y @ p["o_proj.weight"].T


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
def test_matches_numpy_reference(n_kv_heads):
    ms.set_seed(0)
    block = Block(4, n_kv_heads, 8)
    x = np.random.default_rng(0).standard_normal((2, 6, 32)).astype(np.float32)
    ref = np_attention(block, x, np.tril(np.ones((6, 6), bool)))
    np.testing.assert_allclose(block(Tensor(x)).asnumpy(), ref, atol=1e-5)


def test_later_tokens_do_not_change_earlier_outputs():
    ms.set_seed(1)
    block = Block(4, 2, 8)
    x = np.random.default_rng(1).standard_normal((1, 8, 32)).astype(np.float32)
    y = x.copy()
    y[:, 5:] += 10.0
    out_x, out_y = block(Tensor(x)).asnumpy(), block(Tensor(y)).asnumpy()
    np.testing.assert_array_equal(out_x[:, :5], out_y[:, :5])
    assert np.abs(out_x[:, 5:] - out_y[:, 5:]).max() > 1e-3


def test_per_sequence_mask_and_fully_masked_rows_stay_finite():
    ms.set_seed(2)
    block = Block(2, 1, 8)
    x = np.random.default_rng(2).standard_normal((2, 4, 32)).astype(np.float32)
    mask = np.tril(np.ones((2, 4, 4), bool))
    mask[1, 0] = False  # a padding row that may attend to nothing
    out = block(Tensor(x), Tensor(mask)).asnumpy()
    assert np.isfinite(out).all()
    with np.errstate(invalid="ignore"):  # the reference's -inf row is NaN; it is not compared
        ref = np_attention(block, x, mask[:, None])
    np.testing.assert_allclose(out[0], ref[0], atol=1e-5)
    np.testing.assert_allclose(out[1, 1:], ref[1, 1:], atol=1e-5)


def test_flash_attention_off_ascend_is_a_clear_error():
    with pytest.raises(ValueError, match="use_flash_attention=True needs an Ascend device.*use_flash_attention: False"):
        Block(4, 2, 8, use_flash_attention=True)


def test_heads_must_be_a_multiple_of_kv_heads():
    with pytest.raises(ValueError, match=r"num_heads \(4\) must be a multiple of n_kv_heads \(3\)"):
        Block(4, 3, 8)
