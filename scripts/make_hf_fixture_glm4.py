"""Build tests/fixtures/hf_tiny_glm4/ (reference tool; needs torch + transformers), like make_hf_fixtures.py.

    python scripts/make_hf_fixture_glm4.py
    python scripts/make_hf_fixture_glm4.py --check-export DIR   # transformers loads a save_pretrained() dir

A tiny transformers Glm4ForCausalLM: GQA 4/2 heads of 16 (attention 64 wide over a 32-wide residual stream),
partial_rotary_factor 0.5 (8 of each head's 16 dims rotate), q/k/v biases, fused mlp.gate_up_proj; weights
rounded to and stored as bfloat16, with HF's fp32 eager logits for 24 tokens.
"""
import argparse
import os
import sys

import numpy as np
import torch
import transformers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_hf_fixtures import _build, _write  # noqa: E402


def make_glm4():
    config = transformers.Glm4Config(vocab_size=64, hidden_size=32, intermediate_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                     max_position_embeddings=64, rms_norm_eps=1e-5, attention_bias=True,
                                     partial_rotary_factor=0.5, tie_word_embeddings=False, pad_token_id=0,
                                     eos_token_id=[1, 2], bos_token_id=None, attn_implementation="eager")
    model = _build(config, 5, True, transformers.Glm4ForCausalLM)
    ids = np.random.default_rng(5).integers(0, 64, size=(2, 24))
    _write("hf_tiny_glm4", model, ids, bf16_weights=True)


def check_export(directory: str):
    """Load a glm4 directory written by mindformers' save_pretrained with transformers; compare its logits."""
    model = transformers.Glm4ForCausalLM.from_pretrained(directory, attn_implementation="eager").eval()
    fixture = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures",
                           "hf_tiny_glm4")
    ids = np.load(os.path.join(fixture, "input_ids.npy"))
    with torch.no_grad():
        logits = model(torch.from_numpy(ids.astype(np.int64))).logits.numpy()
    diff = np.abs(logits - np.load(os.path.join(fixture, "logits.npy"))).max()
    print(f"transformers loaded {directory}: logits {logits.shape}, max diff to the fixture's {diff:.2e}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check-export", metavar="DIR", help="load DIR with transformers instead of building")
    args = parser.parse_args()
    if args.check_export:
        check_export(args.check_export)
    else:
        make_glm4()
