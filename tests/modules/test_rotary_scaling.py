"""RoPE scaling types (NTK, dynamic, llama3, YaRN) against numpy transcriptions of the published formulas."""
import math

import numpy as np
import pytest

from mindformers.models import LlamaConfig
from mindformers.modules import from_rope_scaling, rope_tables

HS, THETA = 64, 10000.0


def inv_freq(theta=THETA, d=HS):
    return theta ** (-np.arange(0, d, 2) / d)


def tables(freqs, positions, mscale=1.0):
    angles = np.outer(np.arange(positions), freqs)
    angles = np.concatenate([angles, angles], -1)
    return np.cos(angles) * mscale, np.sin(angles) * mscale


def check(method, params, freqs, positions=32, mscale=1.0):
    cos, sin = rope_tables(HS, positions, THETA, method, params)
    ref_cos, ref_sin = tables(freqs, positions, mscale)
    np.testing.assert_allclose(cos, ref_cos, atol=1e-12)
    np.testing.assert_allclose(sin, ref_sin, atol=1e-12)


def test_ntk_stretches_the_base():
    check("NTK", 4.0, inv_freq(THETA * 4.0 ** (HS / (HS - 2))))


def test_dynamic_ntk_uses_table_length_past_original_context():
    # Within the original context the angles are the default ones.
    check("dynamic", {"factor": 2.0, "original_max_position_embeddings": 32}, inv_freq())
    base = THETA * (2.0 * 64 / 16 - 1.0) ** (HS / (HS - 2))
    check("dynamic", {"factor": 2.0, "original_max_position_embeddings": 16}, inv_freq(base), positions=64)


def test_llama3_piecewise_frequencies():
    params = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    ref = []
    for f in inv_freq(500000.0):
        wavelen = 2 * math.pi / f
        if wavelen < 64 / 4.0:
            ref.append(f)
        elif wavelen > 64 / 1.0:
            ref.append(f / 8.0)
        else:
            smooth = (64 / wavelen - 1.0) / (4.0 - 1.0)
            ref.append((1 - smooth) * f / 8.0 + smooth * f)
    cos, _ = rope_tables(HS, 32, 500000.0, "llama3", params)
    np.testing.assert_allclose(cos, tables(np.array(ref), 32)[0], atol=1e-12)
    # All three bands occur for these numbers, so the test exercises each branch.
    ratios = np.array(ref) / inv_freq(500000.0)
    assert np.isclose(ratios, 1).any() and np.isclose(ratios, 1 / 8).any() and ((ratios > 1 / 8) & (ratios < 1)).any()


def yarn_reference(factor, original, beta_fast=32, beta_slow=1, mscale=None, mscale_all_dim=None):
    def get_mscale(s, m=1.0):
        return 1.0 if s <= 1 else 0.1 * m * math.log(s) + 1.0

    def correction_dim(rot):
        return (HS * math.log(original / (rot * 2 * math.pi))) / (2 * math.log(THETA))

    low, high = max(math.floor(correction_dim(beta_fast)), 0), min(math.ceil(correction_dim(beta_slow)), HS - 1)
    ramp = np.clip((np.arange(HS // 2) - low) / (high - low), 0, 1)
    extrapolation = 1 - ramp
    freqs = inv_freq() / factor * (1 - extrapolation) + inv_freq() * extrapolation
    att = get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim) if mscale and mscale_all_dim \
        else get_mscale(factor)
    return freqs, att


@pytest.mark.parametrize("extra", [{}, {"mscale": 0.707, "mscale_all_dim": 0.707},
                                   {"mscale": 1.0, "mscale_all_dim": 0.5}, {"beta_fast": 16, "beta_slow": 2}])
def test_yarn_ramp_and_attention_factor(extra):
    freqs, att = yarn_reference(4.0, 128, **extra)
    check("yarn", {"factor": 4.0, "original_max_position_embeddings": 128, **extra}, freqs, mscale=att)


def test_yarn_explicit_attention_factor():
    freqs, _ = yarn_reference(4.0, 128)
    check("YARN", {"factor": 4.0, "original_max_position_embeddings": 128, "attention_factor": 1.5}, freqs, mscale=1.5)


def test_missing_or_unknown_keys_are_errors():
    with pytest.raises(ValueError, match=r"extend_method 'llama3' needs keys .*missing \['low_freq_factor'"):
        rope_tables(HS, 8, THETA, "llama3", {"factor": 8.0, "high_freq_factor": 4.0,
                                                "original_max_position_embeddings": 64})
    with pytest.raises(ValueError, match=r"unknown \['bogus'\]"):
        rope_tables(HS, 8, THETA, "NTK", {"factor": 2.0, "bogus": 1})


def test_hf_rope_scaling_dict_maps_to_extend_method():
    assert from_rope_scaling(None) == ("None", 1.0)
    assert from_rope_scaling({"type": "linear", "factor": 2.0}) == ("linear", 2.0)
    assert from_rope_scaling({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32}) == \
        ("yarn", {"factor": 4.0, "original_max_position_embeddings": 32})
    with pytest.raises(ValueError, match="rope_type"):
        from_rope_scaling({"factor": 2.0})


def test_llama_config_accepts_rope_scaling():
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64}
    tiny = dict(hidden_size=64, num_heads=4, num_layers=1, seq_length=32, vocab_size=64)
    config = LlamaConfig(rope_scaling=scaling, **tiny)
    assert config.extend_method == "llama3" and config.scaling_factor["factor"] == 8.0
    assert LlamaConfig(**config.to_dict()).extend_method == "llama3"  # round trip keeps both forms consistent
    with pytest.raises(ValueError, match="rope_scaling=.*conflicts with extend_method"):
        LlamaConfig(rope_scaling=scaling, extend_method="PI", scaling_factor=2.0, **tiny)
