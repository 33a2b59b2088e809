"""Build research/internlm2/fixture/: a tiny random InternLM2 checkpoint with reference logits.

    pip install torch==2.13.0 transformers
    python research/internlm2/make_fixture.py

HF's InternLM2 is remote code (not in transformers, and tests never download), but it computes exactly a Llama
decoder. So the reference is a tiny random transformers LlamaForCausalLM (eager attention, weights rounded to
bfloat16 so storing them in bf16 loses nothing): its logits are the expected output, and its weights are packed
into InternLM2's layout (wqkv grouped per KV head, its tensor names) with InternLM2's config.json keys.
"""
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixture")


def main():
    # imported here: --register_path imports every module of this folder, and torch is not a runtime dependency
    import numpy as np
    import torch
    import transformers

    sys.path[:0] = [os.path.dirname(os.path.dirname(HERE)), HERE]
    from internlm2 import InternLM2Config, config_to_internlm2, weights_to_internlm2
    from mindformers.checkpoint.safetensors_io import save_weights_dir

    sizes = dict(vocab_size=2048, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=8,
                 num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=1000000.0)
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**sizes, tie_word_embeddings=False,
                                                                attn_implementation="eager")).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0.0, 0.2)
            p.copy_(p.to(torch.bfloat16).to(torch.float32))
    ids = np.random.default_rng(0).integers(3, 2048, size=(1, 12))
    with torch.no_grad():
        logits = hf(torch.from_numpy(ids)).logits.numpy().astype(np.float32)
    ours = InternLM2Config(hidden_size=64, intermediate_size=96, num_layers=2, num_heads=8, n_kv_heads=2,
                           vocab_size=2048, seq_length=128, max_position_embedding=128, rms_norm_eps=1e-5)
    weights = {k: v.numpy() for k, v in hf.state_dict().items() if "rotary" not in k}
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    save_weights_dir(OUT, weights_to_internlm2(weights, ours), "bfloat16")
    config = {"architectures": ["InternLM2ForCausalLM"], "model_type": "internlm2", **config_to_internlm2(ours)}
    with open(os.path.join(OUT, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    np.save(os.path.join(OUT, "input_ids.npy"), ids.astype(np.int32))
    np.save(os.path.join(OUT, "logits.npy"), logits)
    print(OUT, sorted(os.listdir(OUT)))


if __name__ == "__main__":
    main()
