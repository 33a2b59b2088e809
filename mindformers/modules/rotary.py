"""Rotary position embedding (RoPE) with precomputed cos/sin tables and pluggable scaling types.

The layout is the Hugging Face one (`rotate_half`: the two halves of each head are the real and imaginary
parts), so Hugging Face q/k weights are used as they are, with no permutation.
"""
from typing import Callable, Dict, Tuple, Union

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops

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


# Keyed by upstream `extend_method` names and their Hugging Face `rope_type` equivalents.
ROPE_SCALING: Dict[str, RopeAngles] = {
    "None": _default_angles,
    "default": _default_angles,
    "PI": _linear_angles,
    "linear": _linear_angles,
}


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


def apply_rotary(x, cos, sin):
    """Rotate x (B, nh, T, hs) by position: cos and sin are (T, hs) in x's dtype."""
    return x * cos + rotate_half(x) * sin


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
