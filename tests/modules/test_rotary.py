"""Rotary embedding tables and rotation against a complex-number numpy reference."""
import numpy as np
import pytest
from mindspore import Tensor

from mindformers.modules import RotaryEmbedding, apply_rotary, rope_tables
from mindformers.modules.rotary import position_rotations, rotate_half_matrix


pytestmark = pytest.mark.usefixtures("pynative_mode")


def np_rope(x, theta=10000.0, positions=None):
    """Rotate x (..., T, hs) as complex numbers x[:h] + i x[h:] times exp(i * p * theta^(-2j/hs))."""
    T, hs = x.shape[-2:]
    positions = np.arange(T) if positions is None else positions
    freqs = theta ** (-np.arange(0, hs, 2) / hs)
    z = (x[..., :hs // 2] + 1j * x[..., hs // 2:]) * np.exp(1j * np.outer(positions, freqs))
    return np.concatenate([z.real, z.imag], -1)


def test_tables_match_formula():
    cos, sin = rope_tables(head_dim=8, max_position=5, theta=500.0)
    angles = np.outer(np.arange(5), 500.0 ** (-np.arange(0, 8, 2) / 8))
    np.testing.assert_allclose(cos, np.cos(np.concatenate([angles, angles], -1)), atol=1e-12)
    np.testing.assert_allclose(sin, np.sin(np.concatenate([angles, angles], -1)), atol=1e-12)


def test_apply_rotary_matches_complex_rotation():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 7, 16)).astype(np.float32)  # (B, nh, T, hs)
    cos, sin = RotaryEmbedding(16, 32)(7)
    assert cos.shape == (7, 16)
    out = apply_rotary(Tensor(x), cos, sin).asnumpy()
    np.testing.assert_allclose(out, np_rope(x), atol=1e-5)


def test_decode_rotation_by_matmul_is_exact():
    """One token per row (decode) rotates with a signed-permutation matmul; it must equal the slicing path."""
    rng = np.random.default_rng(1)
    x = Tensor(rng.standard_normal((2, 8, 1, 64)).astype(np.float32) * 30)
    cos, sin = (Tensor(t[None, None, 17:18].astype(np.float32)) for t in rope_tables(64, 32))
    by_matmul = apply_rotary(x, cos, sin, rotate_half_matrix(64)).asnumpy()
    np.testing.assert_array_equal(by_matmul, apply_rotary(x, cos, sin).asnumpy())
    np.testing.assert_allclose(by_matmul[..., 0, :], np_rope(x.asnumpy(), positions=[17])[..., 0, :], atol=1e-4)
    # a decode step's per-row rotation matrices (rows at different positions, as with left padding)
    tables = rope_tables(64, 32)
    cos, sin = (Tensor(np.stack([t[17], t[5]])[:, None, None].astype(np.float32)) for t in tables)
    rot = position_rotations(cos, sin, Tensor(np.eye(64, dtype=np.float32)), rotate_half_matrix(64)).asnumpy()
    rotated = np.einsum("bhd,bde->bhe", x.asnumpy()[:, :, 0], rot)
    np.testing.assert_allclose(rotated, apply_rotary(x, cos, sin).asnumpy()[:, :, 0], rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(rotated[1], np_rope(x.asnumpy()[1], positions=[5])[:, 0], atol=1e-4)


def test_scores_depend_only_on_relative_position():
    rng = np.random.default_rng(1)
    q, k = rng.standard_normal((2, 1, 1, 1, 8)).astype(np.float32)
    cos, sin = RotaryEmbedding(8, 64)(64)
    tiled_q, tiled_k = Tensor(np.repeat(q, 64, axis=2)), Tensor(np.repeat(k, 64, axis=2))
    rq = apply_rotary(tiled_q, cos, sin).asnumpy()[0, 0]
    rk = apply_rotary(tiled_k, cos, sin).asnumpy()[0, 0]
    # q at position p+3 against k at position p: same score for every p.
    scores = np.sum(rq[3:] * rk[:-3], -1)
    np.testing.assert_allclose(scores, scores[0], atol=1e-4)


def test_linear_scaling_interpolates_positions():
    cos_default, _ = rope_tables(8, 16)
    cos_linear, sin_linear = rope_tables(8, 64, extend_method="PI", scaling_factor=4.0)
    np.testing.assert_allclose(cos_linear[::4], cos_default, atol=1e-12)
    np.testing.assert_allclose(rope_tables(8, 64, extend_method="linear", scaling_factor=4.0)[1], sin_linear)


def test_unknown_scaling_type_is_an_error():
    with pytest.raises(ValueError, match="extend_method 'FOO' is not supported; valid: 'None'"):
        rope_tables(8, 16, extend_method="FOO")
    with pytest.raises(ValueError, match="scaling_factor > 0"):
        rope_tables(8, 16, extend_method="PI", scaling_factor={"factor": 2})
