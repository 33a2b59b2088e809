"""generate(): greedy, batching with left padding, sampling, beam search, eos and stop strings (GRAPH mode)."""
import numpy as np
import pytest

from mindformers.generation import GenerationConfig, generate
from mindformers.generation.generate import _StopChecker, beam_search_loop

pytestmark = pytest.mark.usefixtures("graph_mode")

P1 = [1, 426, 264, 471]
P2 = [1, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39]


@pytest.fixture(scope="module")
def greedy(model):
    return {tuple(p): generate(model, [p], max_new_tokens=10)[0] for p in (P1, P2)}


def test_batched_left_padded_prompts_equal_individual_runs(model, greedy):
    assert generate(model, [P1, P2], max_new_tokens=10) == [greedy[tuple(P1)], greedy[tuple(P2)]]


def test_text_prompts_go_through_the_tokenizer(model, tokenizer, greedy):
    assert tokenizer.encode("Return the value") == P1
    assert generate(model, "Return the value", tokenizer=tokenizer, max_new_tokens=10,
                    eos_token_id=[])[0] == greedy[tuple(P1)]


def test_sampling_is_reproducible_with_a_seed(model):
    cfg = GenerationConfig(max_new_tokens=10, do_sample=True, temperature=1.5, top_k=0, seed=7, eos_token_id=[])
    first = generate(model, [P1, P2], cfg)
    assert generate(model, [P1, P2], cfg) == first
    assert generate(model, [P1, P2], cfg.update(seed=8)) != first


def test_sampling_with_top_k_1_is_greedy(model, greedy):
    out = generate(model, [P1], max_new_tokens=10, do_sample=True, top_k=1, temperature=0.7, seed=1)
    assert out[0] == greedy[tuple(P1)]


def test_repetition_penalty_changes_greedy_output(model, greedy):
    out = generate(model, [P1], max_new_tokens=10, repetition_penalty=50.0)[0]
    seen = set(P1)
    # a huge penalty forbids reusing any token while unseen ones remain
    assert not seen & set(out) and len(set(out)) == len(out)
    assert out != greedy[tuple(P1)] or len(set(greedy[tuple(P1)])) == 10


def test_eos_stops_the_row_and_is_kept(model, greedy):
    expected = greedy[tuple(P2)]
    eos = expected[3]
    stop_at = expected.index(eos)
    out = generate(model, [P1, P2], max_new_tokens=10, eos_token_id=[eos, 99999])
    assert out[1] == expected[:stop_at + 1]
    assert out[0] == (greedy[tuple(P1)][:greedy[tuple(P1)].index(eos) + 1] if eos in greedy[tuple(P1)]
                      else greedy[tuple(P1)])


def test_min_new_tokens_suppresses_eos(model, greedy):
    expected = greedy[tuple(P1)]
    out = generate(model, [P1], max_new_tokens=10, eos_token_id=expected[0], min_new_tokens=3)[0]
    assert len(out) >= 3 and out[0] != expected[0]


def test_stop_strings_end_generation(model, tokenizer, greedy):
    expected = greedy[tuple(P1)]
    full_text = tokenizer.decode(expected)
    stop = tokenizer.decode(expected[:3])[-2:]
    assert stop.strip() and stop in full_text
    out = generate(model, [P1], max_new_tokens=10, tokenizer=tokenizer, stop_strings=[stop], eos_token_id=[])[0]
    assert stop in tokenizer.decode(out) and stop not in tokenizer.decode(out[:-1])
    assert out == expected[:len(out)]


def test_beam_search_with_one_beam_is_greedy(model, greedy):
    assert generate(model, [P1, P2], max_new_tokens=10, num_beams=1) == [greedy[tuple(P1)], greedy[tuple(P2)]]


def test_beam_search_scores_at_least_greedy(model, greedy):
    def logprob(prompt, new):
        from mindspore import Tensor
        logits = model(Tensor(np.array([prompt + new], np.int32))).asnumpy()[0].astype(np.float64)
        logits -= logits.max(-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        return sum(logp[len(prompt) - 1 + i, t] for i, t in enumerate(new))

    beams = generate(model, [P1, P2], max_new_tokens=6, num_beams=3, eos_token_id=[])
    for prompt, out in zip((P1, P2), beams):
        assert len(out) == 6
        assert logprob(prompt, out) >= logprob(prompt, greedy[tuple(prompt)][:6]) - 1e-6


class MarkovRunner:
    """Fake model: next-token log-probs depend only on the last token (a hand-written table)."""

    def __init__(self, table, rows):
        self.table, self.last = table, np.zeros(rows, int)

    def start(self, ids, pad):
        self.last = ids[:, -1].copy()
        return self.table[self.last]

    def step(self, tokens):
        self.last = np.asarray(tokens)
        return self.table[self.last]

    def reorder(self, rows):
        self.last = self.last[rows]


def test_beam_search_finds_the_better_path_greedy_misses():
    # tokens: 0 start, 1 "A", 2 "B", 3 eos. Greedy takes A (0.6) then has 0.4 at best: 0.24.
    # Beam search keeps B (0.4), whose continuation to eos has 0.9: 0.36, the best two-token sequence.
    p = np.full((4, 4), 1e-9)
    p[0] = [1e-9, 0.6, 0.4, 1e-9]
    p[1] = [0.3, 1e-9, 0.3, 0.4]
    p[2] = [0.05, 0.05, 1e-9, 0.9]
    p[3] = [0.25, 0.25, 0.25, 0.25]
    table = np.log(p / p.sum(-1, keepdims=True))
    cfg = GenerationConfig(num_beams=2, eos_token_id=3, pad_token_id=0, length_penalty=0.0)
    runner = MarkovRunner(table, rows=2)
    logits = runner.start(np.array([[0], [0]]), np.zeros(2, int))
    out = beam_search_loop(runner, logits, [[0]], cfg, budget=4, stop=_StopChecker(cfg, None))
    assert out == [[2, 3]]
    greedy_cfg = cfg.update(num_beams=1)
    from mindformers.generation.generate import sample_loop
    runner = MarkovRunner(table, rows=1)
    logits = runner.start(np.array([[0]]), np.zeros(1, int))
    assert sample_loop(runner, logits, [[0]], greedy_cfg, 4, _StopChecker(greedy_cfg, None)) == [[1, 3]]


def test_generation_config_errors_name_the_key():
    with pytest.raises(ValueError, match="temperature"):
        GenerationConfig(temperature=0)
    with pytest.raises(ValueError, match="unknown generation_config keys"):
        GenerationConfig.from_dict({"max_new_token": 3})
    with pytest.raises(ValueError, match="eos_token_id"):
        GenerationConfig(eos_token_id="</s>")
    assert GenerationConfig(max_length=30).new_token_budget(10) == 20
    assert GenerationConfig(max_length=30, max_new_tokens=4).new_token_budget(10) == 4
