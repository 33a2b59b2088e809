"""Decode speed of our generate() vs Hugging Face transformers generate() (PyTorch eager, CPU), same weights.

    python bench/generate.py                                   # the 55M shape of docs/performance.md
    python bench/generate.py --size smollm2-135m --batch 1 8   # real small models' shapes (random weights)
    python bench/generate.py --size qwen2.5-0.5b --layers 2    # a shape at reduced depth (what CI runs)

Both decode greedily with a KV cache. Decode tokens/s = batch x (new - 1) / (t(new tokens) - t(1 token)), so
prefill and first-call compilation are excluded (each side runs once as warm-up, and that first call's time is
reported as "first call": our compile). Also prints how many of the greedy tokens agree, the CPU model and the
load average before and after. Needs `pip install -e ".[bench]"` (torch==2.13.0, transformers) for the HF rows;
without them those rows say so.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from train import SIZES, cpu_model, family, machine_load  # noqa: E402  (bench/ is not a package)

# the 55M shape the earlier tables used, by flags (--layers/--hidden/...); named sizes come from bench/train.py
CUSTOM = "custom"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=[CUSTOM] + sorted(SIZES), default=CUSTOM)
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--new", type=int, default=128)
    p.add_argument("--batch", type=int, nargs="+", default=[1], help="batch sizes to time (e.g. 1 8)")
    p.add_argument("--layers", type=int, default=None, help="depth (default: the size's; 8 for custom)")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv_heads", type=int, default=2)
    p.add_argument("--ffn", type=int, default=1376)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--repeats", type=int, default=3, help="best of this many timed runs")
    return p.parse_args()


def shape(args) -> dict:
    """Model config kwargs (our key names) and the family for the chosen size."""
    if args.size == CUSTOM:
        kw = dict(hidden_size=args.hidden, num_layers=args.layers or 8, num_heads=args.heads,
                  n_kv_heads=args.kv_heads, intermediate_size=args.ffn, vocab_size=args.vocab,
                  tie_word_embeddings=False, theta=10000.0, rms_norm_eps=1e-5)
        return {"family": "llama", **kw}
    s = SIZES[args.size]
    kw = {k: s[k] for k in ("hidden_size", "num_layers", "num_heads", "n_kv_heads", "intermediate_size",
                            "vocab_size")}
    kw.update(tie_word_embeddings=s.get("tie", False), theta=s.get("theta", 10000.0), rms_norm_eps=s.get("eps", 1e-5))
    if args.layers:
        kw["num_layers"] = args.layers
    return {"family": family(args.size), **kw}


def best_time(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def build_ours(kw: dict, max_pos: int):
    import mindspore as ms
    from mindformers.core.context import ensure_call_depth
    from mindformers.models import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    config_class, model_class = (Qwen2Config, Qwen2ForCausalLM) if kw["family"] == "qwen2" \
        else (LlamaConfig, LlamaForCausalLM)
    ensure_call_depth(kw["num_layers"])
    ms.set_seed(0)
    args = {k: v for k, v in kw.items() if k != "family"}
    return model_class(config_class(seq_length=max_pos, use_past=True, initializer_range=0.02, **args))


def build_hf(ours, kw: dict, max_pos: int):
    """HF transformers' model of the same family with our weights (parameter names are HF's), or an error."""
    try:
        import torch
        import transformers
    except ImportError as err:
        return None, f"not run: {err.name} is not installed (pip install -e '.[bench]')"
    config_class, model_class = (transformers.Qwen2Config, transformers.Qwen2ForCausalLM) \
        if kw["family"] == "qwen2" else (transformers.LlamaConfig, transformers.LlamaForCausalLM)
    hf = model_class(config_class(
        vocab_size=kw["vocab_size"], hidden_size=kw["hidden_size"], intermediate_size=kw["intermediate_size"],
        num_hidden_layers=kw["num_layers"], num_attention_heads=kw["num_heads"], num_key_value_heads=kw["n_kv_heads"],
        max_position_embeddings=max_pos, rms_norm_eps=kw["rms_norm_eps"], rope_theta=kw["theta"],
        tie_word_embeddings=kw["tie_word_embeddings"], attn_implementation="eager")).eval()
    state = {name: torch.from_numpy(p.asnumpy().copy()) for name, p in ours.parameters_and_names()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if kw["tie_word_embeddings"] else set()
    missing = [m for m in missing if "rotary" not in m and m not in tied]
    if missing or unexpected:
        raise SystemExit(f"weight copy failed: missing {missing}, unexpected {unexpected}")
    return hf, f"HF transformers {transformers.__version__} generate (torch {torch.__version__} eager)"


def main():
    args = parse_args()
    import mindspore as ms
    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE)
    from mindformers.generation import generate

    load_before = machine_load()
    kw = shape(args)
    max_pos = args.prompt + args.new + 64
    ours = build_ours(kw, max_pos)
    hf, hf_label = build_hf(ours, kw, max_pos)
    rng = np.random.default_rng(0)

    print(f"\n{kw['family']} {args.size}: {kw['num_layers']} layers, hidden {kw['hidden_size']}, heads "
          f"{kw['num_heads']}/{kw['n_kv_heads']}, ffn {kw['intermediate_size']}, vocab {kw['vocab_size']} "
          f"({ours.num_params() / 1e6:.1f}M params, tied embeddings: {kw['tie_word_embeddings']}); prompt "
          f"{args.prompt}, {args.new} new tokens, fp32; {cpu_model()}, {os.cpu_count()} CPUs")
    print("| implementation | batch | decode tokens/s | first call (s) | prefill + 1 token (s) | ratio vs HF |")
    print("|---|---|---|---|---|---|")
    for batch in args.batch:
        prompts = [rng.integers(3, kw["vocab_size"], args.prompt).tolist() for _ in range(batch)]

        def run_ours(n, prompts=prompts):
            return generate(ours, prompts, max_new_tokens=n, eos_token_id=[])

        runs = [("mindformers generate (graph, static KV cache)", run_ours)]
        if hf is not None:
            import torch

            def run_hf(n, prompts=prompts):
                with torch.inference_mode():
                    out = hf.generate(torch.tensor(prompts), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                      num_beams=1, pad_token_id=0, eos_token_id=None)
                return out[:, len(prompts[0]):].tolist()
            runs.append((hf_label, run_hf))
        rows, tokens = [], {}
        for name, fn in runs:
            start = time.perf_counter()
            tokens[name] = fn(args.new)  # warm-up: compiles our graphs
            first = time.perf_counter() - start
            fn(1)
            t_full = best_time(lambda fn=fn: fn(args.new), args.repeats)
            t_one = best_time(lambda fn=fn: fn(1), args.repeats)
            rows.append((name, batch * (args.new - 1) / (t_full - t_one), first, t_one))
        hf_speed = rows[1][1] if len(rows) > 1 else None
        for name, speed, first, t_one in rows:
            ratio = f"{speed / hf_speed:.2f}x" if hf_speed else "-"
            print(f"| {name} | {batch} | {speed:.1f} | {first:.1f} | {t_one:.3f} | {ratio} |")
        if hf is None:
            print(f"| HF transformers generate | {batch} | {hf_label} | | | |")
        else:
            ours_tokens, hf_tokens = tokens.values()
            agree = min(next((i for i, (a, b) in enumerate(zip(x, y)) if a != b), len(x))
                        for x, y in zip(ours_tokens, hf_tokens))
            print(f"greedy tokens identical for the first {agree} of {args.new} (worst row of {batch})")
    print(f"load average {load_before} before, {machine_load()} after")


if __name__ == "__main__":
    main()
