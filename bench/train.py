"""Training throughput and memory: our train step and Trainer vs HF transformers (PyTorch eager, torch.compile).

    python bench/train.py --size tiny            # seconds; CI runs this size to keep the script working
    python bench/train.py --size 55m             # the issue's reference config (minutes)
    python bench/train.py --size 135m --steps 6
    python bench/train.py --size smollm2-135m     # real small models' shapes (random weights): SmolLM2-135M,
    python bench/train.py --size qwen2.5-0.5b     # Qwen2.5-0.5B; --layers N runs one at reduced depth
    python bench/train.py --size 55m --gemm-floor  # also the step's matmul-only bound (bench/gemm_floor.py)
    python bench/train.py --size qwen2.5-0.5b --recompute  # every layer recomputed in backward (HF: gradient
                                                           # checkpointing), for memory

Every implementation runs in its own subprocess (so peak RSS is its own) on the same Llama config, the same
initial weights (ours, copied into HF by parameter name) and the same token batches, with AdamW (lr 1e-4,
betas 0.9/0.95, weight decay 0.1 on matrices, grad clipping 1.0), fp32. tokens/s is the median over the steps
after the first; "first step" includes graph compilation. MFU uses LlamaConfig.flops_per_token (PaLM formula)
over the CPU peak the training log states. Needs `pip install -e ".[bench]"` (torch==2.13.0, transformers);
implementations whose packages are missing are reported as such.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SIZES = {  # hidden, layers, heads, kv heads, ffn, vocab, batch, seq (+ family, tied embeddings, RoPE base, eps)
    "tiny": dict(hidden_size=128, num_layers=2, num_heads=4, n_kv_heads=2, intermediate_size=352, vocab_size=2048,
                 batch=4, seq=128),
    "55m": dict(hidden_size=512, num_layers=8, num_heads=8, n_kv_heads=2, intermediate_size=1376, vocab_size=32000,
                batch=4, seq=512),
    "135m": dict(hidden_size=576, num_layers=30, num_heads=9, n_kv_heads=3, intermediate_size=1536, vocab_size=49152,
                 batch=4, seq=512),  # SmolLM-135M shape
    "smollm2-135m": dict(hidden_size=576, num_layers=30, num_heads=9, n_kv_heads=3, intermediate_size=1536,
                         vocab_size=49152, batch=4, seq=512, tie=True, theta=100000.0, eps=1e-5),
    "qwen2.5-0.5b": dict(hidden_size=896, num_layers=24, num_heads=14, n_kv_heads=2, intermediate_size=4864,
                         vocab_size=151936, batch=4, seq=512, family="qwen2", tie=True, theta=1000000.0, eps=1e-6),
}
_SHAPE_KEYS = ("hidden_size", "num_layers", "num_heads", "n_kv_heads", "intermediate_size", "vocab_size")
# --layers N / --seq N override the depth and sequence length of every size (CI runs the real shapes smaller)
LAYERS = {"value": None}
SEQ = {"value": None}
RECOMPUTE = {"value": False}  # --recompute: recompute_config.recompute / HF gradient checkpointing


def seq_length(size: str) -> int:
    return SEQ["value"] or SIZES[size]["seq"]
IMPLS = ("ours_step", "ours_trainer", "torch_eager", "torch_compile")
LABELS = {"ours_step": "mindformers train step (GRAPH, jit)", "ours_trainer": "mindformers Trainer (full loop)",
          "torch_eager": "HF transformers + PyTorch eager", "torch_compile": "HF transformers + torch.compile"}


def family(size: str) -> str:
    """The model family of a size: llama (LlamaForCausalLM) or qwen2 (q/k/v biases)."""
    return SIZES[size].get("family", "llama")


def model_config(size: str):
    from mindformers.models import LlamaConfig, Qwen2Config
    s = SIZES[size]
    shape = {k: s[k] for k in _SHAPE_KEYS}
    if LAYERS["value"]:
        shape["num_layers"] = LAYERS["value"]
    config_class = Qwen2Config if family(size) == "qwen2" else LlamaConfig
    return config_class(seq_length=seq_length(size), tie_word_embeddings=s.get("tie", False), initializer_range=0.02,
                        theta=s.get("theta", 10000.0), rms_norm_eps=s.get("eps", 1e-5),
                        recompute_config={"recompute": True} if RECOMPUTE["value"] else None, **shape)


def model_class(size: str):
    from mindformers.models import LlamaForCausalLM, Qwen2ForCausalLM
    return Qwen2ForCausalLM if family(size) == "qwen2" else LlamaForCausalLM


def batches(size: str, steps: int) -> np.ndarray:
    s = SIZES[size]
    return np.random.default_rng(0).integers(3, s["vocab_size"], (steps, s["batch"], seq_length(size) + 1)
                                             ).astype(np.int32)


def initial_weights(size: str) -> dict:
    import mindspore as ms
    from mindformers.core.context import ensure_call_depth
    ms.set_seed(0)
    config = model_config(size)
    ensure_call_depth(config.num_layers)
    return {p.name: p.asnumpy() for p in model_class(size)(config).get_parameters()}


def peak_rss_gib() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


# ------------------------------------------------------------------------------------------------ workers
def run_ours_step(size: str, steps: int):
    import mindspore as ms
    from mindspore import Tensor
    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE)
    from mindformers.core.optim import AdamW, get_optimizer_grouped_parameters
    from mindformers.wrapper import MFTrainOneStepCell

    weights = initial_weights(size)  # also raises the call-depth limit for the model's depth
    net = model_class(size)(model_config(size))
    for name, value in weights.items():
        net.parameters_dict()[name].set_data(Tensor(value))
    groups = get_optimizer_grouped_parameters(net, weight_decay=0.1)
    step = MFTrainOneStepCell(net, AdamW(groups, learning_rate=1e-4, betas=(0.9, 0.95)), use_clip_grad=True)
    step.set_train(True)
    times, losses = [], []
    for ids in batches(size, steps):
        start = time.perf_counter()
        loss = step(Tensor(ids))[0].asnumpy()
        times.append(time.perf_counter() - start)
        losses.append(float(loss))
    return times, losses


def run_ours_trainer(size: str, steps: int):
    """The whole Trainer loop (dataset pipeline, callbacks, logging) on the same model and batch shape."""
    import tempfile

    from mindformers.config import load_config
    from mindformers.trainer.causal_lm import CausalLanguageModelingTrainer
    s = SIZES[size]
    out = tempfile.mkdtemp(prefix="bench_train_")
    cfg = model_config(size)
    overrides = {"output_dir": out, "runner_config.batch_size": s["batch"], "runner_config.stop_step": steps,
                 "runner_config.epochs": 1000, "lr_schedule.warmup_steps": 0,
                 "callbacks": [{"type": "MFLossMonitor", "per_print_times": 1}]}
    config = load_config(os.path.join(ROOT, "configs/llama/pretrain_llama_tiny.yaml"), overrides)
    config.model.model_config = {"type": type(cfg).__name__, **{k: getattr(cfg, k) for k in (
        "seq_length", "hidden_size", "num_layers", "num_heads", "n_kv_heads", "intermediate_size", "vocab_size",
        "tie_word_embeddings", "theta", "rms_norm_eps")}}
    config.recompute_config = {"recompute": RECOMPUTE["value"]}
    config.model.arch = {"type": model_class(size).__name__}
    if s["vocab_size"] != 2048:  # the shipped tokenizer has 2048 pieces; larger vocabularies just leave ids unused
        config.model.model_config["vocab_size"] = s["vocab_size"]
    history = CausalLanguageModelingTrainer().train(config)
    # wall clock between consecutive step ends: the step plus data loading, callbacks and logging
    elapsed = [r["elapsed_s"] for r in history]
    return [elapsed[0]] + [b - a for a, b in zip(elapsed, elapsed[1:])], [r["loss"] for r in history]


def run_torch(size: str, steps: int, compiled: bool):
    import torch
    import transformers
    c = model_config(size)
    hf_config, hf_model = ((transformers.Qwen2Config, transformers.Qwen2ForCausalLM) if family(size) == "qwen2"
                           else (transformers.LlamaConfig, transformers.LlamaForCausalLM))
    hf = hf_model(hf_config(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads, num_key_value_heads=c.n_kv_heads,
        max_position_embeddings=c.seq_length, rms_norm_eps=c.rms_norm_eps, rope_theta=c.theta,
        tie_word_embeddings=c.tie_word_embeddings, attn_implementation="eager"))
    missing, unexpected = hf.load_state_dict({k: torch.from_numpy(v) for k, v in initial_weights(size).items()},
                                             strict=False)
    tied = {"lm_head.weight"} if c.tie_word_embeddings else set()
    if [m for m in missing if "rotary" not in m and m not in tied] or unexpected:
        raise SystemExit(f"weight copy failed: missing {missing}, unexpected {unexpected}")
    decay = [p for n, p in hf.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in hf.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.95))
    if RECOMPUTE["value"]:
        hf.gradient_checkpointing_enable()
    model = torch.compile(hf) if compiled else hf
    hf.train()
    times, losses = [], []
    for ids in batches(size, steps):
        ids = torch.from_numpy(ids.astype(np.int64))
        start = time.perf_counter()
        logits = model(input_ids=ids[:, :-1]).logits  # the same next-token targets as ours
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
        losses.append(float(loss))
    return times, losses


def worker(impl: str, size: str, steps: int):
    try:
        if impl == "ours_step":
            times, losses = run_ours_step(size, steps)
        elif impl == "ours_trainer":
            times, losses = run_ours_trainer(size, steps)
        else:
            times, losses = run_torch(size, steps, impl == "torch_compile")
    except ImportError as err:
        print(json.dumps({"error": f"not run: {err.name or err} is not installed (pip install -e '.[bench]')"}))
        return
    print(json.dumps({"times": times, "losses": losses, "rss": peak_rss_gib()}))


# ------------------------------------------------------------------------------------------------ driver
def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=sorted(SIZES), default="tiny")
    p.add_argument("--steps", type=int, default=None, help="train steps per implementation (default by size)")
    p.add_argument("--impl", nargs="+", choices=IMPLS, default=list(IMPLS))
    p.add_argument("--gemm-floor", action="store_true",
                   help="also time the step's GEMMs alone (bench/gemm_floor.py): "
                        "the tokens/s no fp32 step here can beat")
    p.add_argument("--layers", type=int, default=None, help="override the size's depth (e.g. a quick run)")
    p.add_argument("--seq", type=int, default=None, help="override the size's sequence length")
    p.add_argument("--recompute", action="store_true",
                   help="recompute every layer's activations in backward (ours: recompute_config; HF: gradient "
                        "checkpointing): less memory, more compute")
    p.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    args = p.parse_args()
    steps = args.steps or {"tiny": 8, "55m": 8}.get(args.size, 5)
    LAYERS["value"], SEQ["value"], RECOMPUTE["value"] = args.layers, args.seq, args.recompute
    if args.worker:
        worker(args.worker, args.size, steps)
        return
    from mindformers.core.callback.callback import cpu_peak_flops
    peak, how = cpu_peak_flops()
    s = SIZES[args.size]
    cfg = model_config(args.size)
    tokens_per_step = s["batch"] * seq_length(args.size)
    load_before = machine_load()
    depth = ((["--layers", str(args.layers)] if args.layers else []) + (["--seq", str(args.seq)] if args.seq else [])
             + (["--recompute"] if args.recompute else []))
    rows = {impl: run_json([__file__, "--size", args.size, "--steps", str(steps), "--worker", impl, *depth])
            for impl in args.impl}
    base = rows.get("torch_eager", {})
    base_speed = tokens_per_s(base, tokens_per_step) if len(base.get("times", ())) > 1 else None
    print(f"\n{type(cfg).__name__[:-6]} {args.size} ({cfg.num_layers} layers): "
          f"{cfg.num_params() / 1e6:.1f}M params, batch {s['batch']} x seq {seq_length(args.size)}, fp32, {steps} "
          f"steps{', every layer recomputed' if args.recompute else ''}; {cpu_model()}, {os.cpu_count()} CPUs, "
          f"load {load_before} before / {machine_load()} after; "
          f"MFU peak {peak / 1e9:.0f} GFLOP/s ({how})")
    print("| implementation | tokens/s | vs PyTorch eager | MFU | peak RSS (GiB) | first step (s) "
          "| loss first -> last |")
    print("|---|---|---|---|---|---|---|")
    for impl, row in rows.items():
        if "error" in row:
            print(f"| {LABELS[impl]} | {row['error']} | | | | | |")
            continue
        speed = tokens_per_s(row, tokens_per_step)
        ratio = f"{speed / base_speed:.2f}x" if base_speed else "-"
        mfu = speed * cfg.flops_per_token() / peak
        print(f"| {LABELS[impl]} | {speed:.0f} | {ratio} | {mfu:.1%} | {row['rss']:.2f} | {row['times'][0]:.1f} | "
              f"{row['losses'][0]:.4f} -> {row['losses'][-1]:.4f} |")
    if args.gemm_floor:
        print_gemm_floor(args.size, tokens_per_step, rows)


def print_gemm_floor(size: str, tokens_per_step: int, rows: dict):
    """The matmul-only bound of this step, measured after the runs, against each implementation's speed."""
    import gemm_floor
    result = run_json([gemm_floor.__file__, "--size", size, "--json"])
    if "error" in result:
        print(f"\nGEMM floor: {result['error']}")
        return
    print()
    gemm_floor.print_table(result)
    bound = tokens_per_step / result["floor_s"]
    for impl, row in rows.items():
        if "error" not in row:
            print(f"  the bound is {bound / tokens_per_s(row, tokens_per_step):.2f}x {LABELS[impl]}")


def cpu_model() -> str:
    """The CPU's model name (benchmarks name the machine they ran on)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        import platform
        return platform.processor() or "unknown CPU"


def machine_load() -> str:
    """The 1-minute load average (figures taken under load overstate our ratio: PyTorch's threads lose more)."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "?"


def run_json(argv) -> dict:
    """Run `python argv...` quietly and return the last JSON object it printed, or {"error": ...}."""
    out = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=dict(os.environ, GLOG_v="3"))
    last = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode == 0 and last:
        return json.loads(last[-1])
    return {"error": f"failed (exit {out.returncode}): {out.stderr.strip().splitlines()[-1:]}"}


def tokens_per_s(row: dict, tokens_per_step: int) -> float:
    """Median speed over the steps after the first (which compiles), or the only step's."""
    return tokens_per_step / statistics.median(row["times"][1:] or row["times"])


if __name__ == "__main__":
    main()
