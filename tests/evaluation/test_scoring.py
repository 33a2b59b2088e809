"""Log-likelihood scoring in length buckets: choices after one prompt share a row, scores do not depend on the
padded length or on the hidden-state path, and multiple-choice metrics write one jsonl line per question."""
import io
import json
import logging
import os

import numpy as np
import pytest
from mindspore import nn, ops

from mindformers.evaluation import LogLikelihoodScorer, batching, scoring
from mindformers.evaluation.progress import Progress
from mindformers.tools.register import MindFormerModuleType, build_from_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLES = os.path.join(ROOT, "mindformers", "assets", "eval_samples")
PAIRS = [("The following are questions. What is 3 + 5?\nA. 7\nB. 8\nAnswer:", f" {x}") for x in "ABCD"] + \
        [("x", " y z"), ("def add(a, b):\n", "    return a + b"), ("A much longer prompt " * 6, " ok")]

pytestmark = pytest.mark.usefixtures("graph_mode")


class _LogitsOnly(nn.Cell):
    """`logits_at` from the full logits (B, L, vocab), the head over every position, as a reference."""

    def __init__(self, network):
        super().__init__(auto_prefix=False)
        self.network, self.config = network, network.config

    def logits_at(self, input_ids, index):
        B, L = input_ids.shape
        flat = index + ops.arange(B, dtype=index.dtype).reshape(B, 1) * L
        return ops.gather(self.network.logits(input_ids).reshape(B * L, -1), flat, 0)


def test_shared_prompts_one_row_and_scores_independent_of_padding_and_path(model, tokenizer, monkeypatch):
    planned = []

    def plan(lengths, batch_size, graph_cost=0):  # every batch padded to its own longest row
        planned.append(list(lengths))
        return batching.plan_batches(lengths, batch_size, graph_cost)

    monkeypatch.setattr(scoring, "plan_batches", plan)
    bucketed = LogLikelihoodScorer(model, tokenizer, batch_size=2).score(PAIRS)
    assert len(planned[0]) == 4  # the four one-token choices share their prompt's row
    monkeypatch.undo()
    one_length = LogLikelihoodScorer(model, tokenizer, batch_size=3).score(PAIRS)
    full_logits = LogLikelihoodScorer(_LogitsOnly(model), tokenizer, batch_size=8).score(PAIRS)
    for a, b, c in zip(bucketed, one_length, full_logits):
        assert a[2] == b[2] == c[2] and a[1] == b[1] == c[1]
        assert abs(a[0] - b[0]) < 1e-5 and abs(a[0] - c[0]) < 1e-5


def test_multiple_choice_writes_one_line_per_question(model, tokenizer, tmp_path):
    metric = build_from_config({"type": "MMLUMetric", "data_dir": os.path.join(SAMPLES, "mmlu"), "num_fewshot": 1,
                                "output_dir": str(tmp_path)}, MindFormerModuleType.METRIC)
    result = metric.evaluate(model, tokenizer)
    assert result["samples_file"] == str(tmp_path / "eval" / "mmlu_samples.jsonl")
    lines = [json.loads(line) for line in open(result["samples_file"], encoding="utf-8")]
    assert [x["id"] for x in lines] == ["arithmetic/0", "arithmetic/1", "arithmetic/2", "geography/0", "geography/1"]
    assert [x["gold"] for x in lines] == [2, 0, 3, 1, 2]  # C, A, D, B, C in the test csv files
    for x in lines:
        assert x["choices"] == [" A", " B", " C", " D"] and len(x["logprobs"]) == 4
        assert x["prediction"] == int(np.argmax(x["logprobs"])) and x["correct"] == (x["prediction"] == x["gold"])
    assert sum(x["correct"] for x in lines) == round(result["score"] * result["n"])


def test_progress_logs_every_tenth_without_a_terminal(caplog):
    progress = Progress(20, "scoring", "continuation", stream=io.StringIO())
    with caplog.at_level(logging.INFO, logger="mindformers"):
        for _ in range(4):
            progress.update(5)
        progress.close()
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(" (")[0] for line in lines] == [f"scoring: {n}/20 continuations" for n in (5, 10, 15, 20)]
    assert "(100%)" in lines[-1] and "left" in lines[-1]
