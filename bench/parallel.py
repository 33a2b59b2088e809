"""Tensor parallel's memory and speed: a model over one worker's memory budget trains with model_parallel=2.

    python bench/parallel.py                                     # the defaults: mp=1 over 3 GiB, mp=2 within
    python bench/parallel.py --budget-gib 3 --layers 4 --hidden 1024 --steps 3

The same random-weight Llama (seed 0) trains on the same token batches (AdamW, fp32, gradient clipping) as one
process (mp=1) and as two msrun workers with model_parallel=2 (parallel/tensor_parallel.py: attention heads,
feed-forward, embedding rows, lm_head and the cross-entropy split over mp). Each worker writes its own peak RSS
(ru_maxrss) and step times. Both layouts train the same batch each step (dp 1), so tokens/s counts it once:
batch x seq over the median step after the first (which compiles).
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SHAPE = ("layers", "hidden", "ffn", "heads", "kv_heads", "vocab", "batch", "seq", "steps")  # passed on to workers


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget-gib", type=float, default=3.0, help="one worker's memory budget (peak RSS)")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--ffn", type=int, default=2816, help="SwiGLU width")
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--tie", action="store_true", help="tied embeddings (lm_head = embedding table, as SmolLM2)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--steps", type=int, default=4, help="train steps per layout (the first compiles)")
    p.add_argument("--mp-worker", type=int, metavar="MP", help=argparse.SUPPRESS)  # one worker of layout mp=MP
    p.add_argument("--out", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def worker(args):
    """Train `--steps` steps as this worker of an mp=args.mp_worker layout; write out/mp<mp>_rank<r>.json."""
    import resource

    import mindspore as ms
    from mindspore import Tensor
    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE)
    mp, rank = args.mp_worker, 0
    if mp > 1:
        from mindspore.communication import get_rank, init
        init()
        if os.environ.get("MS_ROLE") == "MS_SCHED":  # msrun's scheduler runs this script too: it only coordinates
            return
        rank = get_rank()
    from mindformers.core.context import ensure_call_depth
    from mindformers.core.optim import AdamW, get_optimizer_grouped_parameters
    from mindformers.models import LlamaConfig, LlamaForCausalLM
    from mindformers.parallel import MeshLayout, apply_tensor_parallel
    from mindformers.wrapper import MFTrainOneStepCell

    ms.set_seed(0)  # every worker builds the same whole model, then keeps its part
    config = LlamaConfig(hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads,
                         n_kv_heads=args.kv_heads, intermediate_size=args.ffn, vocab_size=args.vocab,
                         seq_length=args.seq, max_position_embedding=args.seq, initializer_range=0.02,
                         tie_word_embeddings=args.tie)
    ensure_call_depth(config.num_layers)
    net = LlamaForCausalLM(config)
    tp = apply_tensor_parallel(net, MeshLayout(dp=1, mp=mp), rank) if mp > 1 else None
    held = sum(p.size for p in net.get_parameters())
    step = MFTrainOneStepCell(net, AdamW(get_optimizer_grouped_parameters(net, weight_decay=0.1),
                                         learning_rate=1e-4, betas=(0.9, 0.95)),
                              use_clip_grad=True, tensor_parallel=tp)
    step.set_train(True)
    batches = np.random.default_rng(0).integers(3, args.vocab, (args.steps, args.batch, args.seq + 1)).astype(np.int32)
    times, losses = [], []
    for ids in batches:
        start = time.perf_counter()
        loss = step(Tensor(ids))[0].asnumpy()
        times.append(time.perf_counter() - start)
        losses.append(float(loss))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    with open(os.path.join(args.out, f"mp{mp}_rank{rank}.json"), "w", encoding="utf-8") as f:
        json.dump({"rank": rank, "times": times, "losses": losses, "rss_gib": rss, "params": int(held)}, f)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_layout(mp: int, args, out: str) -> dict:
    """Run one layout; {"workers": [per-rank results]} or {"error": ...}."""
    shape = [f"--{key.replace('_', '-')}={getattr(args, key)}" for key in SHAPE]
    script = [os.path.abspath(__file__), f"--mp-worker={mp}", f"--out={out}", *shape] + (["--tie"] if args.tie else [])
    if mp == 1:
        cmd = [sys.executable, *script]
    else:
        cmd = [sys.executable, "-m", "mindspore.parallel.cluster.run", f"--worker_num={mp}",
               f"--local_worker_num={mp}", f"--master_port={_free_port()}",
               f"--log_dir={os.path.join(out, f'msrun_mp{mp}')}", "--join=True", *script]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, GLOG_v="3"))
    paths = [os.path.join(out, f"mp{mp}_rank{r}.json") for r in range(mp)]
    if done.returncode != 0 or not all(os.path.isfile(p) for p in paths):
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"error": f"mp={mp} failed (exit {done.returncode}): {tail} (logs under {out})"}
    workers = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            workers.append(json.load(f))
    return {"workers": workers}


def tokens_per_s(worker_result: dict, tokens: int) -> float:
    times = worker_result["times"]
    return tokens / statistics.median(times[1:] or times)


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


def loadavg() -> str:
    with open("/proc/loadavg", encoding="utf-8") as f:
        return " ".join(f.read().split()[:3])


def main():
    args = parse_args()
    if args.mp_worker:
        worker(args)
        return
    load_before = loadavg()
    tokens = args.batch * args.seq
    out = tempfile.mkdtemp(prefix="bench_parallel_")
    results = {mp: run_layout(mp, args, out) for mp in (1, 2)}
    load_after = loadavg()
    print(f"\nLlama {args.layers} layers, hidden {args.hidden}, ffn {args.ffn}, heads {args.heads}/{args.kv_heads}, "
          f"vocab {args.vocab}{' (tied)' if args.tie else ''}; batch {args.batch} x seq {args.seq}, fp32, AdamW, "
          f"{args.steps} steps; "
          f"budget {args.budget_gib:g} GiB per worker")
    print(f"CPU: {cpu_model()}, {os.cpu_count()} CPUs; /proc/loadavg before {load_before}, after {load_after}")
    print("| layout | workers | parameters per worker | peak RSS per worker (GiB) | within budget | tokens/s "
          "| vs mp=1 | loss first -> last |")
    print("|---|---|---|---|---|---|---|---|")
    base = None
    for mp, result in results.items():
        label = "1 process (mp=1)" if mp == 1 else f"dp 1 x mp {mp} (msrun)"
        if "error" in result:
            print(f"| {label} | {mp} | {result['error']} | | | | | |")
            continue
        workers = result["workers"]
        speed = min(tokens_per_s(w, tokens) for w in workers)  # the step ends when the slowest worker's does
        base = base or (speed if mp == 1 else None)
        peak = max(w["rss_gib"] for w in workers)
        losses = workers[0]["losses"]
        rss = " / ".join("%.2f" % w["rss_gib"] for w in workers)
        ratio = "%.2fx" % (speed / base) if base else "-"
        print(f"| {label} | {mp} | {workers[0]['params'] / 1e6:.1f}M | {rss} | "
              f"{'yes' if peak <= args.budget_gib else 'no'} | {speed:.0f} | {ratio} | "
              f"{losses[0]:.4f} -> {losses[-1]:.4f} |")
    if all("workers" in r for r in results.values()):
        gap = max(abs(a - b) for a, b in zip(results[1]["workers"][0]["losses"], results[2]["workers"][0]["losses"]))
        print(f"max |loss(mp=2) - loss(mp=1)| over the {args.steps} steps: {gap:.2g}")
    if any("error" in r for r in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
