"""Rows of different lengths in few shapes: sorted longest first, batched, and each batch right-padded to one of
a few lengths. Every distinct padded length compiles the model once more, so the lengths are chosen to minimise
padded tokens plus a compile's worth of tokens per length (dynamic programming over the sorted batches)."""
from dataclasses import dataclass
from typing import List, Sequence

import numpy as np

# A compile of the 30-layer 135M shape takes ~20-45 s on the project's 2-core CPU, about what 4-8k tokens of its
# forward take (docs/performance.md, "Evaluation"); smaller models compile faster but also run faster.
GRAPH_COST_TOKENS = 4096


@dataclass(frozen=True)
class Batch:
    """Row indices (longest first, at most batch_size) and the length they are padded to."""
    length: int
    rows: List[int]


def plan_batches(lengths: Sequence[int], batch_size: int, graph_cost: int = GRAPH_COST_TOKENS) -> List[Batch]:
    """Batches of `batch_size` rows in order of decreasing length, each padded to the longest row of the first
    batch of its group; groups minimise batch_size x padded length summed over batches + graph_cost per group."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    chunks = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    tops = np.array([lengths[chunk[0]] for chunk in chunks], np.float64)  # non-increasing
    n = len(chunks)
    # best[j]: least cost of chunks j..n-1; a group of chunks j..k-1 costs graph_cost + (k - j) x rows x tops[j]
    best, end = np.zeros(n + 1), np.full(n + 1, n)
    for j in range(n - 1, -1, -1):
        ks = np.arange(j + 1, n + 1)
        costs = graph_cost + (ks - j) * batch_size * tops[j] + best[ks]
        pick = int(np.argmin(costs))
        best[j], end[j] = costs[pick], ks[pick]
    batches, j = [], 0
    while j < n:
        batches += [Batch(int(tops[j]), chunk) for chunk in chunks[j:end[j]]]
        j = int(end[j])
    return batches
