"""Decode speed of our generate() vs Hugging Face transformers generate() (PyTorch eager, CPU), same weights.

    python bench/generate.py [--prompt 128] [--new 128] [--layers 8] [--hidden 512] [--vocab 32000]

Both decode greedily with a KV cache, batch 1. Decode tokens/s = (new - 1) / (t(new tokens) - t(1 token)),
so prefill and first-call compilation are excluded (each side runs once as warm-up). Also prints how many of
the greedy tokens agree. Needs `pip install torch==2.13.0 transformers` (reference tools, not runtime deps).
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--new", type=int, default=128)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv_heads", type=int, default=2)
    p.add_argument("--ffn", type=int, default=1376)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--repeats", type=int, default=3, help="best of this many timed runs")
    return p.parse_args()


def best_time(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    args = parse_args()
    import mindspore as ms
    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE)
    from mindformers.generation import generate
    from mindformers.models import LlamaConfig, LlamaForCausalLM

    max_pos = args.prompt + args.new + 64
    ms.set_seed(0)
    ours = LlamaForCausalLM(LlamaConfig(
        seq_length=max_pos, hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads,
        n_kv_heads=args.kv_heads, intermediate_size=args.ffn, vocab_size=args.vocab, use_past=True,
        initializer_range=0.02))

    import torch
    import transformers
    hf_config = transformers.LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.ffn,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        max_position_embeddings=max_pos, rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
        attn_implementation="eager")
    hf = transformers.LlamaForCausalLM(hf_config).eval()
    # Parameter names are Hugging Face's and Dense weights are (out, in): copy one to one.
    state = {name: torch.from_numpy(p.asnumpy().copy()) for name, p in ours.parameters_and_names()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    missing = [m for m in missing if "rotary" not in m]
    if missing or unexpected:
        raise SystemExit(f"weight copy failed: missing {missing}, unexpected {unexpected}")

    prompt = np.random.default_rng(0).integers(3, args.vocab, args.prompt).tolist()

    def run_ours(n):
        return generate(ours, [prompt], max_new_tokens=n, eos_token_id=[])[0]

    def run_hf(n):
        with torch.inference_mode():
            out = hf.generate(torch.tensor([prompt]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                              num_beams=1, pad_token_id=0, eos_token_id=None)
        return out[0, len(prompt):].tolist()

    rows = []
    tokens = {}
    for name, fn in (("mindformers generate (graph, static KV cache)", run_ours),
                     (f"HF transformers {transformers.__version__} generate (torch {torch.__version__} eager)",
                      run_hf)):
        tokens[name] = fn(args.new)  # warm-up: compiles our graphs
        fn(1)
        t_full = best_time(lambda: fn(args.new), args.repeats)
        t_one = best_time(lambda: fn(1), args.repeats)
        rows.append((name, (args.new - 1) / (t_full - t_one), t_one))
    ours_tokens, hf_tokens = tokens.values()
    agree = next((i for i, (a, b) in enumerate(zip(ours_tokens, hf_tokens)) if a != b), len(ours_tokens))
    print(f"\nLlama {args.layers} layers, hidden {args.hidden}, heads {args.heads}/{args.kv_heads}, ffn {args.ffn}, "
          f"vocab {args.vocab} ({ours.num_params() / 1e6:.1f}M params); batch 1, prompt {args.prompt}, "
          f"{args.new} new tokens, fp32, {torch.get_num_threads()} torch threads")
    print("| implementation | decode tokens/s | prefill + 1 token (s) | ratio vs HF |")
    print("|---|---|---|---|")
    hf_speed = rows[1][1]
    for name, speed, t_one in rows:
        print(f"| {name} | {speed:.1f} | {t_one:.3f} | {speed / hf_speed:.2f}x |")
    print(f"greedy tokens identical for the first {agree} of {args.new}")


if __name__ == "__main__":
    main()
