"""Static KV cache: prefill and every decode step give the logits of a plain full forward (GRAPH mode)."""
import numpy as np
import pytest
from mindspore import Tensor

from mindformers.generation import generate
from mindformers.generation.runners import CachedRunner, FullRunner, make_runner

pytestmark = pytest.mark.usefixtures("graph_mode")

PROMPT = [1, 426, 264, 471, 9, 77, 1500, 3]


def full_logits(model, ids):
    """Plain training-path forward (positions 0..T-1, causal mask): (T, vocab) for one sequence."""
    return model(Tensor(np.array([ids], np.int32))).asnumpy()[0]


def run_steps(runner, prompt_len, prompts, tokens):
    """Prefill then feed `tokens` (n, B); the logits after the prompt and after each fed token."""
    pad = np.array([prompt_len - len(p) for p in prompts])
    ids = np.zeros((len(prompts), prompt_len), np.int32)
    for row, p in enumerate(prompts):
        ids[row, pad[row]:] = p
    out = [runner.start(ids, pad)]
    for step in tokens:
        out.append(runner.step(np.array(step)))
    return np.stack(out)  # (n+1, B, vocab)


def test_prefill_and_each_decode_step_match_full_forward(model):
    n = 6
    fed = [int(t) for t in np.random.default_rng(0).integers(3, 2048, n)]
    runner, prompt_len = make_runner(model, 1, len(PROMPT), n + 1, use_past=True)
    assert isinstance(runner, CachedRunner) and prompt_len == 32  # the prompt is left-padded to its bucket
    cached = run_steps(runner, prompt_len, [PROMPT], [[t] for t in fed])[:, 0]
    reference = full_logits(model, PROMPT + fed)[len(PROMPT) - 1:]
    assert cached.shape == reference.shape
    np.testing.assert_allclose(cached, reference, atol=1e-5, rtol=0)


def test_no_cache_runner_matches_full_forward(model):
    fed = [5, 6, 7]
    runner, prompt_len = make_runner(model, 1, len(PROMPT), 4, use_past=False)
    assert isinstance(runner, FullRunner)
    logits = run_steps(runner, prompt_len, [PROMPT], [[t] for t in fed])[:, 0]
    np.testing.assert_allclose(logits, full_logits(model, PROMPT + fed)[len(PROMPT) - 1:], atol=1e-5, rtol=0)


def test_left_padded_rows_match_each_prompt_alone(model):
    short, long = PROMPT[:3], PROMPT + [11, 12, 13, 14]
    fed = [[20, 30], [21, 31], [22, 32]]
    runner, prompt_len = make_runner(model, 2, len(long), 4, use_past=True)
    batched = run_steps(runner, prompt_len, [short, long], fed)
    for row, prompt in enumerate((short, long)):
        alone = full_logits(model, prompt + [step[row] for step in fed])[len(prompt) - 1:]
        np.testing.assert_allclose(batched[:, row], alone, atol=1e-5, rtol=0)


def test_greedy_with_cache_equals_greedy_by_full_forward(model):
    new = generate(model, [PROMPT], max_new_tokens=12)[0]
    assert len(new) == 12
    seq = PROMPT + new
    # greedy means: every new token is the argmax of the full forward at the position before it
    assert full_logits(model, seq)[len(PROMPT) - 1:-1].argmax(-1).tolist() == new
    assert generate(model, [PROMPT], max_new_tokens=12, use_past=False)[0] == new


def test_decode_runs_one_graph_per_token(model, monkeypatch):
    runner, prompt_len = make_runner(model, 1, len(PROMPT), 5, use_past=True)
    calls = []
    decode = runner.graphs.decode
    monkeypatch.setattr(runner.graphs, "decode", lambda *args: calls.append(1) or decode(*args))
    run_steps(runner, prompt_len, [PROMPT], [[4], [5], [6], [7]])
    assert len(calls) == 4


def test_prompt_plus_new_tokens_beyond_max_position_is_an_error(model):
    with pytest.raises(ValueError, match="max_position_embedding"):
        generate(model, [PROMPT], max_new_tokens=125)


def test_generation_and_scoring_keep_parameter_names(model, tokenizer):
    """Wrapping the model in the decode/score graphs must not prefix its parameter names (checkpoints use them)."""
    from mindformers.evaluation import LogLikelihoodScorer
    from mindformers.generation import generate
    from mindformers.evaluation.scoring import _TokenLoss

    before = [p.name for p in model.get_parameters()]
    generate(model, ["Return the"], tokenizer=tokenizer, max_new_tokens=2)
    generate(model, ["Return the"], tokenizer=tokenizer, max_new_tokens=2, use_past=False)
    LogLikelihoodScorer(model, tokenizer)
    _TokenLoss(model, -100)
    assert [p.name for p in model.get_parameters()] == before and before[0] == "model.embed_tokens.weight"


def test_cache_graphs_are_reused_per_shape_and_bounded(model, monkeypatch):
    from mindformers.generation import runners
    monkeypatch.setattr(runners, "CACHE_SHAPES_KEPT", 2)
    first, _ = make_runner(model, 1, len(PROMPT), 4, use_past=True)
    again, _ = make_runner(model, 1, len(PROMPT), 4, use_past=True)
    assert again.graphs is first.graphs  # same shape: the compiled graphs and their cache Parameters
    make_runner(model, 2, len(PROMPT), 4, use_past=True)
    make_runner(model, 3, len(PROMPT), 4, use_past=True)
    assert len(runners._graphs(model)["cached"]) == 2  # the oldest shape was dropped
    assert make_runner(model, 1, len(PROMPT), 4, use_past=True)[0].graphs is not first.graphs
