"""Length bucketing for scoring: every row once, longest first, few padded lengths chosen by cost."""
import numpy as np
import pytest

from mindformers.evaluation.batching import plan_batches


@pytest.mark.parametrize("graph_cost", [0, 500, 10 ** 9])
def test_every_row_once_longest_first_and_fits(graph_cost):
    lengths = np.random.default_rng(0).integers(5, 300, 53).tolist()
    batches = plan_batches(lengths, 4, graph_cost)
    rows = [r for b in batches for r in b.rows]
    assert sorted(rows) == list(range(53)) and all(len(b.rows) <= 4 for b in batches)
    assert [lengths[r] for r in rows] == sorted(lengths, reverse=True)
    assert all(b.length >= lengths[r] for b in batches for r in b.rows)
    padded = [b.length for b in batches]
    assert padded == sorted(padded, reverse=True)
    if graph_cost == 0:  # compiles are free: each batch is padded to its own longest row only
        assert padded == [lengths[b.rows[0]] for b in batches]
    if graph_cost == 10 ** 9:  # compiles cost everything: one shape
        assert set(padded) == {max(lengths)}


def test_lengths_trade_padding_against_compiles():
    lengths = [400] * 8 + [390] * 8 + [120] * 8 + [100] * 8
    # one length: 4 x 8 x 400 + 1000; two (400, 120): 2 x 8 x 400 + 2 x 8 x 120 + 2000 (the least); four: 4000 more
    assert [b.length for b in plan_batches(lengths, 8, graph_cost=1000)] == [400, 400, 120, 120]
    assert [b.length for b in plan_batches(lengths, 8, graph_cost=5000)] == [400] * 4
    assert plan_batches([], 8) == []
