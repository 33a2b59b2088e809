"""Rotary position embedding (RoPE) with precomputed cos/sin tables and pluggable scaling types.

The layout is the Hugging Face one (`rotate_half`: the two halves of each head are the real and imaginary
parts), so Hugging Face q/k weights are used as they are, with no permutation.
"""
import math
from typing import Callable, Dict, Optional, Tuple, Union

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops

from .layers import expand_to

ScalingFactor = Union[float, dict]
# A scaling type maps (head_dim, theta, max_position, scaling_factor) to the rotation angles
# (max_position, head_dim // 2) and a magnitude factor applied to cos and sin (YaRN's "mscale"; 1 otherwise).
RopeAngles = Callable[[int, float, int, ScalingFactor], Tuple[np.ndarray, float]]


def _inv_freq(head_dim: int, theta: float) -> np.ndarray:
    return 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)


def _default_angles(head_dim: int, theta: float, max_position: int, scaling_factor: ScalingFactor):
    if scaling_factor != 1.0:
        raise ValueError(f"model_config.scaling_factor={scaling_factor!r} has no effect without a scaling "
                         f"type; set extend_method (e.g. 'PI') or scaling_factor: 1.0")
    positions = np.arange(max_position, dtype=np.float64)
    return np.outer(positions, _inv_freq(head_dim, theta)), 1.0


def _linear_angles(head_dim: int, theta: float, max_position: int, scaling_factor: ScalingFactor):
    # Position interpolation: squeeze `factor` times more positions into the trained angle range.
    if isinstance(scaling_factor, dict) or not scaling_factor or scaling_factor <= 0:
        raise ValueError(f"model_config.extend_method 'PI'/'linear' needs a number scaling_factor > 0, "
                         f"got {scaling_factor!r}")
    positions = np.arange(max_position, dtype=np.float64) / float(scaling_factor)
    return np.outer(positions, _inv_freq(head_dim, theta)), 1.0


def _params(method: str, scaling_factor: ScalingFactor, required: Tuple[str, ...],
            optional: Dict[str, Optional[float]]):
    """The scaling type's parameters from a `scaling_factor` dict (or a bare number meaning `factor`)."""
    params = {"factor": scaling_factor} if not isinstance(scaling_factor, dict) else dict(scaling_factor)
    params.pop("rope_type", None)
    params.pop("type", None)
    missing = [key for key in required if params.get(key) is None]
    unknown = sorted(set(params) - set(required) - set(optional))
    if missing or unknown:
        raise ValueError(f"model_config.scaling_factor for extend_method '{method}' needs keys "
                         f"{list(required)} (optional: {list(optional)}); missing {missing}, unknown {unknown}")
    for key in required:
        if isinstance(params[key], bool) or not isinstance(params[key], (int, float)) or params[key] <= 0:
            raise ValueError(f"model_config.scaling_factor.{key} for extend_method '{method}' must be a number "
                             f"> 0, got {params[key]!r}")
    return {**optional, **{k: v for k, v in params.items() if v is not None}}


def _ntk_angles(head_dim: int, theta: float, max_position: int, scaling_factor: ScalingFactor):
    # Static NTK-aware scaling (upstream 'NTK'): stretch the base so the lowest frequency covers factor x more
    # positions while the highest stays put.
    factor = _params("NTK", scaling_factor, ("factor",), {})["factor"]
    positions = np.arange(max_position, dtype=np.float64)
    return np.outer(positions, _inv_freq(head_dim, theta * factor ** (head_dim / (head_dim - 2)))), 1.0


def _dynamic_angles(head_dim: int, theta: float, max_position: int, scaling_factor: ScalingFactor):
    # Hugging Face 'dynamic' NTK grows the base with the current length L past the original context:
    # base * (factor * L / original - (factor - 1)) ** (d / (d - 2)). Our tables are static, so L is the table
    # length: exact for sequences of max_position tokens, default angles when max_position <= original.
    p = _params("dynamic", scaling_factor, ("factor",), {"original_max_position_embeddings": max_position})
    original, factor = p["original_max_position_embeddings"], p["factor"]
    if max_position > original:
        theta = theta * (factor * max_position / original - (factor - 1)) ** (head_dim / (head_dim - 2))
    return np.outer(np.arange(max_position, dtype=np.float64), _inv_freq(head_dim, theta)), 1.0


def _llama3_angles(head_dim: int, theta: float, max_position: int, scaling_factor: ScalingFactor):
    # Llama 3.1: long wavelengths (> original / low_freq_factor) are interpolated by `factor`, short ones
    # (< original / high_freq_factor) kept, and the band between blended linearly in original / wavelength.
    p = _params("llama3", scaling_factor,
                ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"), {})
    low, high, original = p["low_freq_factor"], p["high_freq_factor"], p["original_max_position_embeddings"]
    inv_freq = _inv_freq(head_dim, theta)
    wavelen = 2 * np.pi / inv_freq
    smooth = np.clip((original / wavelen - low) / (high - low), 0.0, 1.0)
    inv_freq = (1 - smooth) * inv_freq / p["factor"] + smooth * inv_freq
    return np.outer(np.arange(max_position, dtype=np.float64), inv_freq), 1.0


def _yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def _yarn_angles(head_dim: int, theta: float, max_position: int, scaling_factor: ScalingFactor):
    # YaRN (Peng et al. 2023): dims that rotate more than beta_fast times over the original context keep their
    # frequency, dims under beta_slow rotations are interpolated by `factor`, with a linear ramp between;
    # cos/sin are scaled by the attention factor 0.1 ln(factor) + 1 (or the mscale / mscale_all_dim ratio).
    p = _params("yarn", scaling_factor, ("factor", "original_max_position_embeddings"),
                {"beta_fast": 32.0, "beta_slow": 1.0, "mscale": None, "mscale_all_dim": None,
                 "attention_factor": None})
    factor, original = p["factor"], p["original_max_position_embeddings"]
    attention_factor = p["attention_factor"]
    if attention_factor is None:
        if p["mscale"] and p["mscale_all_dim"]:
            attention_factor = _yarn_mscale(factor, p["mscale"]) / _yarn_mscale(factor, p["mscale_all_dim"])
        else:
            attention_factor = _yarn_mscale(factor)

    def dim_of(rotations):  # the (fractional) dim index whose wavelength fits `rotations` times in `original`
        return head_dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low = max(math.floor(dim_of(p["beta_fast"])), 0)
    high = min(math.ceil(dim_of(p["beta_slow"])), head_dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp
    ramp = np.clip((np.arange(head_dim // 2, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
    inv_freq = _inv_freq(head_dim, theta)
    inv_freq = inv_freq / factor * ramp + inv_freq * (1 - ramp)
    return np.outer(np.arange(max_position, dtype=np.float64), inv_freq), float(attention_factor)


# Keyed by upstream `extend_method` names and their Hugging Face `rope_type` equivalents.
ROPE_SCALING: Dict[str, RopeAngles] = {
    "None": _default_angles,
    "default": _default_angles,
    "PI": _linear_angles,
    "linear": _linear_angles,
    "NTK": _ntk_angles,
    "dynamic": _dynamic_angles,
    "LLAMA3": _llama3_angles,
    "llama3": _llama3_angles,
    "YARN": _yarn_angles,
    "yarn": _yarn_angles,
}


def from_rope_scaling(rope_scaling: Optional[dict]) -> Tuple[str, ScalingFactor]:
    """(extend_method, scaling_factor) for a Hugging Face `rope_scaling` dict ({rope_type or type, factor, ...})."""
    if rope_scaling is None:
        return "None", 1.0
    if not isinstance(rope_scaling, dict):
        raise ValueError(f"model_config.rope_scaling must be a mapping like {{rope_type: llama3, factor: 8.0, "
                         f"...}} or None, got {rope_scaling!r}")
    rope_type = rope_scaling.get("rope_type", rope_scaling.get("type"))
    if rope_type is None:
        raise ValueError(f"model_config.rope_scaling needs a rope_type key, got {rope_scaling!r}")
    params = {k: v for k, v in rope_scaling.items() if k not in ("rope_type", "type")}
    if rope_type == "default":
        return "None", 1.0
    if rope_type == "linear":
        return "linear", params.get("factor")
    return check_extend_method(rope_type), params


def check_extend_method(extend_method) -> str:
    """Normalize an `extend_method` value (None means 'None') and reject unknown scaling types."""
    name = "None" if extend_method is None else str(extend_method)
    if name not in ROPE_SCALING:
        raise ValueError(f"model_config.extend_method '{name}' is not supported; "
                         f"valid: {', '.join(repr(k) for k in ROPE_SCALING)}")
    return name


def rope_tables(head_dim: int, max_position: int, theta: float = 10000.0, extend_method="None",
                scaling_factor: ScalingFactor = 1.0) -> Tuple[np.ndarray, np.ndarray]:
    """cos and sin tables (max_position, head_dim) in float64 for the given scaling type."""
    if head_dim % 2:
        raise ValueError(f"rotary embedding needs an even head dim, got {head_dim}")
    angles, mscale = ROPE_SCALING[check_extend_method(extend_method)](head_dim, theta, max_position, scaling_factor)
    angles = np.concatenate([angles, angles], axis=-1)  # (P, hs): both halves rotate by the same angle
    return np.cos(angles) * mscale, np.sin(angles) * mscale


def rotate_half(x):
    """(x1, x2) -> (-x2, x1) on the last axis: multiplication by i in the half-split complex layout."""
    half = x.shape[-1] // 2
    return ops.concat((-x[..., half:], x[..., :half]), -1)


def rotate_half_matrix(head_dim: int) -> Tensor:
    """The (hs, hs) signed permutation P with x @ P == rotate_half(x)."""
    half = head_dim // 2
    p = np.zeros((head_dim, head_dim), np.float32)
    p[np.arange(half) + half, np.arange(half)] = -1.0
    p[np.arange(half), np.arange(half) + half] = 1.0
    return Tensor(p)


def position_rotations(cos, sin, identity, rotation):
    """(B, hs, hs) matrices R = diag(cos) + P diag(sin), one per row, with x @ R == apply_rotary(x, cos, sin) for
    one token per row (cos, sin (B, 1, 1, hs); `identity` and `rotation` (P) constant (hs, hs)). A decode step
    builds them once and rotates q and k with one batched matmul each, instead of four kernels each."""
    B, hs = cos.shape[0], cos.shape[-1]
    return identity * cos.reshape(B, 1, hs) + rotation * sin.reshape(B, 1, hs)


def apply_rotary(x, cos, sin, rotation=None):
    """Rotate x (B, nh, T, hs) by position: cos and sin are (T, hs) or (B, 1, T, hs) in x's dtype.

    With `rotation` (rotate_half_matrix(hs)), rotate_half is one small matmul instead of two slices, a negation
    and a concat (CPU StridedSlice is slow), and in training a smaller graph to compile and differentiate (the
    slices' gradients are zero-filled full-size tensors). It is exact: every product but one per output is by 0.
    (A decode step rotates with `position_rotations` instead.)
    """
    cos, sin = expand_to(cos, x.shape), expand_to(sin, x.shape)
    if rotation is None:
        return x * cos + rotate_half(x) * sin
    shape = x.shape
    turned = ops.matmul(x.reshape(-1, shape[-1]), ops.cast(rotation, x.dtype)).reshape(shape)
    return x * cos + turned * sin


class RotaryEmbedding(nn.Cell):
    """Holds cos/sin tables for positions [0, max_position); `construct(T)` returns the first T rows."""

    def __init__(self, head_dim: int, max_position: int, theta: float = 10000.0, extend_method="None",
                 scaling_factor: ScalingFactor = 1.0, dtype: ms.dtype = ms.float32):
        super().__init__()
        self.max_position = max_position
        cos, sin = rope_tables(head_dim, max_position, theta, extend_method, scaling_factor)
        # Plain tensors, not Parameters: they are derived from the config and stay out of checkpoints.
        self.cos = Tensor(cos.astype(np.float32), dtype)
        self.sin = Tensor(sin.astype(np.float32), dtype)

    def construct(self, seq_len: int):
        return self.cos[:seq_len], self.sin[:seq_len]
