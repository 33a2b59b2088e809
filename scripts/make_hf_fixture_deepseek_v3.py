"""Build tests/fixtures/hf_tiny_deepseek_v3/ (reference tool; needs torch + transformers, see make_hf_fixtures.py).

    python scripts/make_hf_fixture_deepseek_v3.py

A 3-layer DeepseekV3ForCausalLM: layer 0 dense (first_k_dense_replace=1), layers 1-2 MoE with 8 routed experts
in 4 groups (top-2 groups, top-2 experts), 2 shared experts' width, low-rank q (q_lora_rank), interleaved RoPE
with YaRN scaling (mscale_all_dim changes the softmax scale) and a random e_score_correction_bias, so every
DeepSeek-specific path shows in the logits. Weights are rounded to bfloat16 and stored so.

Its subdirectory plain_q/ is a 2-layer variant covering the other branches: a plain q_proj (q_lora_rank null),
half-split RoPE (rope_interleave false) without scaling, one expert group, no top-k renormalization,
attention biases and no dense layer (first_k_dense_replace=0).
"""
import os
import sys

import numpy as np
import torch
import transformers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_hf_fixtures import _build, _write  # noqa: E402  pylint: disable=wrong-import-position

ROPE = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 16,
        "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 0.707}


def tiny_config(**overrides) -> transformers.DeepseekV3Config:
    """The fixture's config; `overrides` are DeepseekV3Config keys."""
    kwargs = dict(vocab_size=64, hidden_size=32, intermediate_size=64, moe_intermediate_size=16,
                  num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4, n_shared_experts=2,
                  n_routed_experts=8, routed_scaling_factor=2.5, kv_lora_rank=16, q_lora_rank=24,
                  qk_rope_head_dim=8, v_head_dim=12, qk_nope_head_dim=8, n_group=4, topk_group=2,
                  num_experts_per_tok=2, first_k_dense_replace=1, norm_topk_prob=True, max_position_embeddings=64,
                  rope_parameters=dict(ROPE), rope_interleave=True, tie_word_embeddings=False, num_mtp_layers=0,
                  attn_implementation="eager")
    kwargs.update(overrides)
    return transformers.DeepseekV3Config(**kwargs)


PLAIN_Q = dict(num_hidden_layers=2, q_lora_rank=None, rope_interleave=False, rope_parameters={"rope_type": "default",
               "rope_theta": 10000.0}, n_group=1, topk_group=1, norm_topk_prob=False, attention_bias=True,
               first_k_dense_replace=0, n_shared_experts=1, routed_scaling_factor=1.5)


def _model(config, seed: int):
    model = _build(config, seed, True, transformers.DeepseekV3ForCausalLM)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                # as large as the spread of sigmoid scores, so the bias changes which experts are chosen
                bias = torch.randn(buffer.shape, generator=generator) * 0.3
                buffer.copy_(bias.to(torch.bfloat16).to(torch.float32))
    return model


def main():
    ids = np.random.default_rng(7).integers(0, 64, size=(2, 12))
    _write("hf_tiny_deepseek_v3", _model(tiny_config(), 7), ids, bf16_weights=True)
    _write(os.path.join("hf_tiny_deepseek_v3", "plain_q"), _model(tiny_config(**PLAIN_Q), 8), ids, bf16_weights=True)


if __name__ == "__main__":
    main()
