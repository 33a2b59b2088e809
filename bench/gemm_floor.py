"""The matmul floor of one Llama train step: every GEMM of forward and backward, timed alone in MindSpore and PyTorch.

    python bench/gemm_floor.py --size 55m        # one table, a few minutes
    python bench/train.py --size 55m --gemm-floor  # the same, with the bound set against the measured speeds

A train step cannot be faster than its matrix multiplications. For each GEMM of one step (per layer: the seven
projections' forward, input-gradient and weight-gradient products and the six attention batched products; then
the lm_head's three) this times the bare kernel on the step's shapes in MindSpore (GRAPH mode, the MatMul and
BatchMatMul primitives the models use) and in PyTorch (`torch.matmul`), each with the right operand stored either
way round (the faster layout counts), keeps the faster of the two libraries per shape,
and adds them up with their counts. tokens / floor is an upper bound on the tokens/s of any fp32 implementation
of this step on this machine, with every other op (norms, softmax, the loss, the optimizer) for free.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train import SIZES, model_config  # noqa: E402  (bench/ is not a package)



def copies(batch: int, M: int, K: int, N: int) -> int:
    """Independent products per timed call: several for a small GEMM, so the call's own overhead (~0.1 ms)
    is spread over them; one for a large one (the lm_head's take ~0.5 s each)."""
    return min(4, max(1, round(4e9 / (2 * batch * M * K * N))))


def step_gemms(size: str):
    """[(name, count per step, batch, M, K, N)]: every matmul of one training step of the `size` config."""
    s, c = SIZES[size], model_config(size)
    tokens, T = s["batch"] * s["seq"], s["seq"]
    hs = c.head_dim
    rep = c.num_heads // c.n_kv_heads
    L = c.num_layers
    C, F = c.hidden_size, c.intermediate_size
    projections = {"q_proj": (C, c.num_heads * hs), "k_proj, v_proj": (C, c.n_kv_heads * hs),
                   "o_proj": (c.num_heads * hs, C), "gate_proj, up_proj": (C, F), "down_proj": (F, C)}
    gemms = []
    for name, (n_in, n_out) in projections.items():
        count = L * (name.count(",") + 1)
        gemms += [(f"{name} forward", count, 1, tokens, n_in, n_out),
                  (f"{name} input grad", count, 1, tokens, n_out, n_in),
                  (f"{name} weight grad", count, 1, n_out, tokens, n_in)]
    # GQA with the query heads that share a kv head folded into the query axis: (B * nkv) products of
    # (rep*T, hs) x (hs, T); the backward has four products of the same size.
    bmm = s["batch"] * c.n_kv_heads
    gemms += [("attention scores q k^T", L, bmm, rep * T, hs, T), ("attention probs @ v", L, bmm, rep * T, T, hs),
              ("attention grad of probs", L, bmm, rep * T, hs, T), ("attention grad of v", L, bmm, T, rep * T, hs),
              ("attention grad of q", L, bmm, rep * T, T, hs), ("attention grad of k", L, bmm, T, rep * T, hs)]
    gemms += [("lm_head forward", 1, 1, tokens, c.hidden_size, c.vocab_size),
              ("lm_head input grad", 1, 1, tokens, c.vocab_size, c.hidden_size),
              ("lm_head weight grad", 1, 1, c.vocab_size, tokens, c.hidden_size)]
    return gemms


def time_mindspore(batch: int, M: int, K: int, N: int, reps: int, transpose_b: bool) -> float:
    """Seconds per (batch x) (M, K) @ (K, N) product with MindSpore's MatMul/BatchMatMul in a compiled graph
    (with `transpose_b` the right operand is stored (N, K), as a Linear weight is)."""
    from mindspore import Tensor, nn, ops

    class Products(nn.Cell):
        def __init__(self):
            super().__init__()
            self.mm = (ops.BatchMatMul if batch > 1 else ops.MatMul)(transpose_b=transpose_b)

        def construct(self, a_list, b):
            return tuple([self.mm(a, b) for a in a_list])

    lead = (batch,) if batch > 1 else ()
    n = copies(batch, M, K, N)
    rng = np.random.default_rng(0)
    a_list = tuple(Tensor(rng.standard_normal(lead + (M, K), dtype=np.float32)) for _ in range(n))
    b = Tensor(rng.standard_normal(lead + ((N, K) if transpose_b else (K, N)), dtype=np.float32))
    net = Products()
    net(a_list, b)[0].asnumpy()  # compile
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        out = net(a_list, b)
        out[-1].asnumpy()
        best = min(best, time.perf_counter() - start)
    return best / n


def time_torch(batch: int, M: int, K: int, N: int, reps: int, transpose_b: bool) -> float:
    """Seconds per product with torch.matmul into a preallocated output (`transpose_b`: b stored (N, K))."""
    import torch
    lead = (batch,) if batch > 1 else ()
    a = torch.randn(lead + (M, K))
    b = torch.randn(lead + (N, K)).transpose(-1, -2) if transpose_b else torch.randn(lead + (K, N))
    out = torch.empty(lead + (M, N))
    torch.matmul(a, b, out=out)
    n = copies(batch, M, K, N)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(n):
            torch.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return best / n


def measure(size: str, reps: int = 3) -> dict:
    """Per-GEMM seconds in both libraries (None for a library that is not installed) and the summed floor."""
    import mindspore as ms
    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        import torch
        torch.set_num_threads(os.cpu_count())
    except ImportError:
        torch = None
    rows = []
    for name, count, batch, M, K, N in step_gemms(size):
        # either layout of the right operand may be the faster one: an implementation can store it either way
        ours = min(time_mindspore(batch, M, K, N, reps, t) for t in (False, True))
        ref = min(time_torch(batch, M, K, N, reps, t) for t in (False, True)) if torch is not None else None
        rows.append({"name": name, "count": count, "shape": [batch, M, K, N], "mindspore_s": ours, "torch_s": ref})
    floor = sum(r["count"] * min(t for t in (r["mindspore_s"], r["torch_s"]) if t is not None) for r in rows)
    s = SIZES[size]
    return {"rows": rows, "floor_s": floor, "tokens_per_step": s["batch"] * s["seq"]}


def print_table(result: dict):
    print("| GEMM | per step | (batch x) M x K x N | MindSpore ms | GFLOP/s | PyTorch ms | GFLOP/s |")
    print("|---|---|---|---|---|---|---|")
    total = {"mindspore_s": 0.0, "torch_s": 0.0}
    for r in result["rows"]:
        batch, M, K, N = r["shape"]
        flops = 2 * batch * M * K * N
        cells = []
        for key in ("mindspore_s", "torch_s"):
            t = r[key]
            cells += ["-", "-"] if t is None else [f"{t * 1e3:.1f}", f"{flops / t / 1e9:.0f}"]
            total[key] += r["count"] * (t or 0.0)
        shape = f"{batch} x {M} x {K} x {N}" if batch > 1 else f"{M} x {K} x {N}"
        print(f"| {r['name']} | {r['count']} | {shape} | " + " | ".join(cells) + " |")
    tokens = result["tokens_per_step"]
    have_torch = all(r["torch_s"] is not None for r in result["rows"])
    reference = f"PyTorch {total['torch_s']:.2f} s" if have_torch else "PyTorch not installed"
    print(f"\nall GEMMs of one step: MindSpore {total['mindspore_s']:.2f} s, {reference}; "
          f"the faster per shape: {result['floor_s']:.2f} s = at most {tokens / result['floor_s']:.0f} tokens/s "
          f"for any fp32 implementation of this step here")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=sorted(SIZES), default="tiny")
    p.add_argument("--reps", type=int, default=3, help="timed calls per GEMM (the fastest counts)")
    p.add_argument("--json", action="store_true", help="print the measurements as one JSON line")
    args = p.parse_args()
    result = measure(args.size, args.reps)
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)


if __name__ == "__main__":
    main()
