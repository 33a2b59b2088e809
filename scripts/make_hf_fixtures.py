"""Build the tiny Hugging Face fixtures under tests/fixtures/ (reference tool; needs torch + transformers).

    pip install torch==2.13.0 transformers
    python scripts/make_hf_fixtures.py            # writes tests/fixtures/hf_tiny_*/
    python scripts/make_hf_fixtures.py --check-export DIR   # HF transformers loads a save_pretrained() dir

Each fixture directory holds config.json, generation_config.json, model.safetensors (weights rounded to and
stored as bfloat16), input_ids.npy and logits.npy (HF's fp32 eager logits for input_ids).
hf_tiny_llama is Llama-2 style (MHA, untied head, the shipped sentencepiece tokenizer); hf_tiny_llama3 is
Llama-3 style (GQA, tied embeddings, llama3 rope scaling); hf_tiny_{qwen2,qwen3,mixtral,qwen3_moe} are the
other families' HF classes.
"""
import argparse
import json
import os
import shutil

import numpy as np
import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
TOKENIZER = os.path.join(ROOT, "mindformers", "assets", "tiny_corpus", "tokenizer.model")


def _build(config, seed: int, bf16_weights: bool, model_class=LlamaForCausalLM):
    torch.manual_seed(seed)
    model = model_class(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)  # larger than the 0.02 init so the logits are not all near zero
            if bf16_weights:
                p.copy_(p.to(torch.bfloat16).to(torch.float32))  # exact in bf16, so storing bf16 loses nothing
    return model


def _write(name: str, model, input_ids: np.ndarray, bf16_weights: bool):
    out = os.path.join(FIXTURES, name)
    shutil.rmtree(out, ignore_errors=True)
    with torch.no_grad():
        logits = model(torch.from_numpy(input_ids)).logits.numpy().astype(np.float32)
    save_model = model.to(torch.bfloat16) if bf16_weights else model
    save_model.save_pretrained(out, safe_serialization=True)
    np.save(os.path.join(out, "input_ids.npy"), input_ids.astype(np.int32))
    np.save(os.path.join(out, "logits.npy"), logits)
    print(f"{out}: logits {logits.shape}, files {sorted(os.listdir(out))}")
    return out


def make_llama2():
    config = LlamaConfig(vocab_size=2048, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                         rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=1,
                         eos_token_id=2, attn_implementation="eager")
    model = _build(config, 0, bf16_weights=True)
    ids = np.random.default_rng(0).integers(3, 2048, size=(1, 10))
    out = _write("hf_tiny_llama", model, ids, bf16_weights=True)
    shutil.copy(TOKENIZER, os.path.join(out, "tokenizer.model"))
    with open(os.path.join(out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
                   "unk_token": "<unk>", "pad_token": None, "add_bos_token": True, "add_eos_token": False}, f,
                  indent=2)


def make_llama3():
    rope = {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32}
    config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         rms_norm_eps=1e-5, rope_theta=500000.0, rope_scaling=rope, tie_word_embeddings=True,
                         bos_token_id=250, eos_token_id=[251, 252], attn_implementation="eager")
    model = _build(config, 1, bf16_weights=True)
    # positions up to 48 so the scaled low-frequency bands matter
    ids = np.random.default_rng(1).integers(0, 250, size=(1, 48))
    _write("hf_tiny_llama3", model, ids, bf16_weights=True)


def make_families():
    """One tiny bf16 model per other supported family, with HF's logits."""
    common = dict(vocab_size=64, hidden_size=32, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False,
                  attn_implementation="eager")
    families = {
        "qwen2": (transformers.Qwen2Config(**common), transformers.Qwen2ForCausalLM),
        "qwen3": (transformers.Qwen3Config(**common, head_dim=16), transformers.Qwen3ForCausalLM),
        "mixtral": (transformers.MixtralConfig(**common, num_local_experts=4, num_experts_per_tok=2),
                    transformers.MixtralForCausalLM),
        "qwen3_moe": (transformers.Qwen3MoeConfig(**common, head_dim=16, num_experts=4, num_experts_per_tok=2,
                                                  moe_intermediate_size=16, norm_topk_prob=True),
                      transformers.Qwen3MoeForCausalLM),
    }
    ids = np.random.default_rng(2).integers(0, 64, size=(1, 16))
    for seed, (name, (config, model_class)) in enumerate(families.items()):
        _write(f"hf_tiny_{name}", _build(config, seed, True, model_class), ids, bf16_weights=True)


def check_export(directory: str):
    """Load a directory written by mindformers' save_pretrained with HF transformers and print its logits."""
    model = LlamaForCausalLM.from_pretrained(directory, attn_implementation="eager").eval()
    ids = torch.arange(8).reshape(1, 8)
    with torch.no_grad():
        logits = model(ids).logits.numpy()
    np.save(os.path.join(directory, "hf_logits.npy"), logits)
    print(f"transformers loaded {directory}: logits {logits.shape}, sum {logits.sum():.6f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check-export", metavar="DIR", help="load DIR with transformers instead of building")
    args = parser.parse_args()
    if args.check_export:
        check_export(args.check_export)
        return
    make_llama2()
    make_llama3()
    make_families()


if __name__ == "__main__":
    main()
