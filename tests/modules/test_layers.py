"""Linear, Embedding, RMSNorm and SwiGLU against numpy references."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from mindformers.modules import Embedding, Linear, RMSNorm, SwiGLU, llama_ffn_hidden_size


pytestmark = pytest.mark.usefixtures("pynative_mode")


def np_rms_norm(x, w, eps):
    x = x.astype(np.float64)
    return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps) * w


def test_rms_norm_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 16)).astype(np.float32) * 3
    norm = RMSNorm(16, eps=1e-6)
    w = rng.standard_normal(16).astype(np.float32)
    norm.weight.set_data(Tensor(w))
    out = norm(Tensor(x)).asnumpy()
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, np_rms_norm(x, w, 1e-6), atol=1e-5, rtol=1e-5)


def test_rms_norm_statistics_in_fp32_for_fp16_input():
    # 300^2 = 90000 overflows float16 (max 65504): only an fp32 mean of squares gives the right answer.
    x = np.full((1, 4), 300.0, dtype=np.float16)
    out = RMSNorm(4)(Tensor(x))
    assert out.dtype == ms.float16
    np.testing.assert_allclose(out.asnumpy().astype(np.float32), np.ones((1, 4)), atol=1e-3)


def test_linear_matches_torch_layout():
    rng = np.random.default_rng(1)
    lin = Linear(8, 5, has_bias=True)
    assert lin.weight.shape == (5, 8) and lin.bias.shape == (5,)
    w = rng.standard_normal((5, 8)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    lin.weight.set_data(Tensor(w))
    lin.bias.set_data(Tensor(b))
    x = rng.standard_normal((2, 3, 8)).astype(np.float32)
    np.testing.assert_allclose(lin(Tensor(x)).asnumpy(), x @ w.T + b, atol=1e-5)


def test_linear_init_is_normal_with_given_std_and_seeded():
    ms.set_seed(3)
    a = Linear(256, 256, init_std=0.02).weight.asnumpy()
    ms.set_seed(3)
    b = Linear(256, 256, init_std=0.02).weight.asnumpy()
    np.testing.assert_array_equal(a, b)
    assert abs(a.mean()) < 1e-3 and abs(a.std() - 0.02) < 1e-3


def test_embedding_looks_up_rows():
    emb = Embedding(10, 4)
    ids = np.array([[1, 9, 1]], dtype=np.int32)
    np.testing.assert_array_equal(emb(Tensor(ids)).asnumpy(), emb.weight.asnumpy()[ids])


@pytest.mark.parametrize("hidden, multiple_of, multiplier, expected", [
    (4096, 256, None, 11008),   # Llama 2 7B
    (5120, 256, None, 13824),   # Llama 2 13B
    (8192, 4096, 1.3, 28672),   # Llama 2 70B
    (4096, 1024, 1.3, 14336),   # Llama 3 8B
])
def test_llama_ffn_hidden_size(hidden, multiple_of, multiplier, expected):
    assert llama_ffn_hidden_size(hidden, multiple_of, multiplier) == expected


def test_swiglu_matches_numpy():
    rng = np.random.default_rng(2)
    mlp = SwiGLU(Linear(6, 10), Linear(6, 10), Linear(10, 6))
    x = rng.standard_normal((2, 3, 6)).astype(np.float32)
    g = x @ mlp.gate_proj.weight.asnumpy().T
    u = x @ mlp.up_proj.weight.asnumpy().T
    ref = (g / (1 + np.exp(-g)) * u) @ mlp.down_proj.weight.asnumpy().T
    np.testing.assert_allclose(mlp(Tensor(x)).asnumpy(), ref, atol=1e-6)
