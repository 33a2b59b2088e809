"""Evaluation: log-likelihood scoring, benchmark readers and prompts, exact match, pass@k in a sandbox, eval mode."""
import json
import math
import os
from itertools import combinations

import numpy as np
import pytest
from mindspore import Tensor

from mindformers.config import load_config
from mindformers.evaluation import (BoolQMetric, CEvalMetric, GSM8KMetric, HumanEvalMetric, LogLikelihoodScorer,
                                    MMLUMetric, MultipleChoiceMetric, gsm8k_answer, pass_at_k, run_program)
from mindformers.evaluation import benchmarks
from mindformers.evaluation.execution import network_isolation
from mindformers.trainer.causal_lm import CausalLanguageModelingTrainer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLES = os.path.join(ROOT, "mindformers", "assets", "eval_samples")

pytestmark = pytest.mark.usefixtures("graph_mode")


def test_loglikelihood_matches_a_direct_computation(model, tokenizer):
    pairs = [("The answer is", " A"), ("def add(a, b):\n", "    return a + b"), ("x", " y z")]
    scores = LogLikelihoodScorer(model, tokenizer, batch_size=2).score(pairs)
    for (context, cont), (logp, greedy, n) in zip(pairs, scores):
        ids = tokenizer.encode(context + cont)
        logits = model(Tensor(np.array([ids[:-1]], np.int32))).asnumpy()[0].astype(np.float64)
        logprobs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
            - logits.max(-1, keepdims=True)
        targets = ids[1:]
        expected = sum(logprobs[t, targets[t]] for t in range(len(targets) - n, len(targets)))
        assert n == len(ids) - len(tokenizer.encode(context))
        assert abs(logp - expected) < 1e-3
        assert greedy == all(logits[t].argmax() == targets[t] for t in range(len(targets) - n, len(targets)))


class _Oracle:
    """Stands in for the scorer: the continuation that names the right answer gets the best score."""

    def __init__(self, right):
        self.right, self.contexts = right, []

    def __call__(self, network, tokenizer, batch_size=8):
        return self

    def score(self, pairs):
        self.contexts += [c for c, _ in pairs]
        return [(0.0 if self.right(c, x) else -1.0, False, 1) for c, x in pairs]


def _answer_of(context):
    """The right letter for the last question in a sample-file prompt (looked up from the files)."""
    key = {"What is 3 + 5?": " C", "What is 6 * 2?": " A", "What is 9 - 4, written as a word?": " D",
           "Which of these is a continent?": " B", "Which of these is a river?": " C", "2 + 3 = ?": " A",
           "7 - 2 = ?": " C"}
    last = context.rsplit("\n\n", 1)[-1].split("\n")[0]
    return key.get(last)


def test_mmlu_and_ceval_prompts_and_accuracy(monkeypatch):
    oracle = _Oracle(lambda c, x: x == _answer_of(c))
    monkeypatch.setattr(benchmarks, "LogLikelihoodScorer", oracle)
    result = MMLUMetric(os.path.join(SAMPLES, "mmlu"), num_fewshot=1).evaluate(None, None)
    assert result["score"] == 1.0 and result["n"] == 5
    assert result["subjects"] == {"arithmetic": {"accuracy": 1.0, "n": 3}, "geography": {"accuracy": 1.0, "n": 2}}
    prompt = oracle.contexts[0]
    assert prompt.startswith("The following are multiple choice questions (with answers) about arithmetic.\n\n"
                             "What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer: B\n\nWhat is 3 + 5?\nA. 7")
    assert prompt.endswith("D. 6\nAnswer:")
    ceval = CEvalMetric(os.path.join(SAMPLES, "ceval"), num_fewshot=1).evaluate(None, None)
    assert ceval["score"] == 1.0 and ceval["n"] == 2 and oracle.contexts[-1].startswith("以下是中国关于arithmetic考试")


def test_boolq_and_generic_multiple_choice(monkeypatch):
    monkeypatch.setattr(benchmarks, "LogLikelihoodScorer", _Oracle(lambda c, x: x == " no"))
    result = BoolQMetric(os.path.join(SAMPLES, "boolq.jsonl"), num_fewshot=1).evaluate(None, None)
    assert result["n"] == 3 and math.isclose(result["score"], 2 / 3)  # answers true, false, false after 1 shot
    monkeypatch.setattr(benchmarks, "LogLikelihoodScorer", _Oracle(lambda c, x: x in (" green", " jump", " 8")))
    result = MultipleChoiceMetric(os.path.join(SAMPLES, "multiple_choice.jsonl")).evaluate(None, None)
    assert result["score"] == 1.0 and set(result["subjects"]) == {"words", "numbers"}


def test_bad_files_name_file_and_line(tmp_path):
    (tmp_path / "dev").mkdir()
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "x_test.csv").write_text("q,1,2,3,4,A\nq,1,2,3,4,E\n")
    with pytest.raises(ValueError, match=r"x_test.csv:2: expected question,A,B,C,D,answer"):
        MMLUMetric(str(tmp_path), num_fewshot=0).evaluate(None, None)
    (tmp_path / "mc.jsonl").write_text('{"question": "q", "choices": ["a"], "answer": 0}\n{"question": "q"\n')
    with pytest.raises(ValueError, match=r"mc.jsonl:2: not valid JSON"):
        MultipleChoiceMetric(str(tmp_path / "mc.jsonl")).evaluate(None, None)
    (tmp_path / "mc.jsonl").write_text('{"question": "q", "choices": ["a", "b"], "answer": 5}\n')
    with pytest.raises(ValueError, match=r"answer 5 is not an index or letter of its 2 choices"):
        MultipleChoiceMetric(str(tmp_path / "mc.jsonl")).evaluate(None, None)
    with pytest.raises(ValueError, match=r"subjects \['nope'\] have no file"):
        MMLUMetric(str(tmp_path), subjects=["nope"], num_fewshot=0).evaluate(None, None)


@pytest.mark.parametrize("text, expected", [("so 5 apples\n#### 5", "5"), ("It is 1,000.", "1000"),
                                            ("3 then 4.0", "4"), ("no number", None), ("#### -7 left", "-7")])
def test_gsm8k_answer_extraction(text, expected):
    assert gsm8k_answer(text) == expected


def test_gsm8k_exact_match_with_a_stub_generator():
    outputs = iter([" 3 + 2 = 5\n#### 5", " 3 * 4 = 11\n#### 11", " it is 1000 stamps"])
    result = GSM8KMetric(os.path.join(SAMPLES, "gsm8k.jsonl"), num_fewshot=0).evaluate(
        None, None, generate_fn=lambda net, tok, prompts, n, stop, **kw: [next(outputs) for _ in prompts])
    assert result["n"] == 3 and math.isclose(result["score"], 2 / 3)


def test_pass_at_k_is_the_unbiased_estimator():
    for n, c, k in [(5, 2, 1), (5, 2, 3), (6, 0, 2), (4, 4, 2), (10, 3, 5)]:
        brute = np.mean([any(i < c for i in combo) for combo in combinations(range(n), k)])
        assert math.isclose(pass_at_k(n, c, k), brute)
    with pytest.raises(ValueError, match="pass@3 needs at least 3 samples"):
        pass_at_k(2, 1, 3)


def test_humaneval_runs_candidates_in_a_sandbox(tmp_path):
    tasks = [json.loads(line) for line in open(os.path.join(SAMPLES, "humaneval.jsonl"), encoding="utf-8")]
    right = HumanEvalMetric(os.path.join(SAMPLES, "humaneval.jsonl")).evaluate(
        None, None, generate_fn=lambda net, tok, prompts, n, stop, **kw: [next(
            t["canonical_solution"] for t in tasks if t["prompt"] == p) for p in prompts])
    assert right["score"] == 1.0 and right["passed_per_task"] == {"Sample/0": 1, "Sample/1": 1}
    wrong = HumanEvalMetric(os.path.join(SAMPLES, "humaneval.jsonl"), num_samples=2, k=[1, 2]).evaluate(
        None, None, generate_fn=lambda net, tok, prompts, n, stop, **kw: ["    return None\n"] * len(prompts))
    assert wrong["pass@1"] == 0.0 and wrong["pass@2"] == 0.0
    assert run_program("while True:\n    pass\n", timeout=1.0) == (False, "timed out after 1 s")
    ok, reason = run_program("import sys\nsys.exit(3)\n")
    assert not ok and "exit code 3" in reason
    if network_isolation():  # where namespaces are available the candidate has no network
        probe = "import socket\ns = socket.socket()\ns.settimeout(2)\ns.connect(('10.255.255.1', 80))\n"
        ok, reason = run_program(probe, timeout=5.0)
        assert not ok and "unreachable" in reason.lower()


def test_eval_mode_runs_every_listed_benchmark(model, tokenizer, tmp_path):
    config = load_config(os.path.join(ROOT, "configs/llama/eval_llama_tiny_benchmarks.yaml"),
                         {"output_dir": str(tmp_path), "load_checkpoint": ""})
    results = CausalLanguageModelingTrainer().evaluate(config, network=model, tokenizer=tokenizer)
    assert set(results) == {"perplexity", "mmlu", "ceval", "boolq", "multiple_choice", "gsm8k", "humaneval"}
    assert results["mmlu"]["n"] == 5 and 0.0 <= results["mmlu"]["score"] <= 1.0
    assert results["perplexity"]["score"] > 1.0 and results["humaneval"]["n"] == 2
    saved = json.loads((tmp_path / "eval" / "mmlu.json").read_text())
    assert saved["subjects"]["geography"]["n"] == 2
