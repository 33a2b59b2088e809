"""generate(): greedy, sampling and beam search over the compiled prefill/decode graphs."""
from typing import List, Optional, Sequence, Union

import numpy as np

from ..tokenization.chat_template import encode_chat
from .config import GenerationConfig
from .logits import apply_repetition_penalty, choose_tokens, log_softmax
from .runners import make_runner

Prompts = Union[str, Sequence[str], Sequence[int], Sequence[Sequence[int]], np.ndarray]


def _prompt_ids(inputs: Prompts, tokenizer, chat: bool = False) -> List[List[int]]:
    """Token id lists from one or several texts (needs the tokenizer; with `chat` each text is a user turn in
    the tokenizer's chat template) or ids."""
    if isinstance(inputs, np.ndarray):
        inputs = inputs.tolist()
    if isinstance(inputs, str):
        inputs = [inputs]
    inputs = list(inputs)
    if not inputs:
        raise ValueError("generate needs at least one prompt")
    if all(isinstance(x, (int, np.integer)) for x in inputs):
        inputs = [inputs]
    prompts = []
    for item in inputs:
        if isinstance(item, str):
            if tokenizer is None:
                raise ValueError("generate got text prompts but no tokenizer; pass tokenizer= or token ids")
            if chat and getattr(tokenizer, "chat_template", None) is None:
                raise ValueError(f"generation_config.use_chat_template: True but {type(tokenizer).__name__} has no "
                                 f"chat_template (tokenizer_config.json's chat_template, or processor.tokenizer."
                                 f"chat_template); set use_chat_template: False to continue the raw text")
            item = encode_chat([{"role": "user", "content": item}], tokenizer) if chat else tokenizer.encode(item)
        ids = [int(i) for i in item]
        if not ids:
            raise ValueError("generate got an empty prompt; a prompt needs at least one token (e.g. bos)")
        prompts.append(ids)
    return prompts


def _resolve_config(model, generation_config, tokenizer, kwargs) -> GenerationConfig:
    if generation_config is None:
        config = GenerationConfig()
    elif isinstance(generation_config, GenerationConfig):
        config = generation_config
    else:
        config = GenerationConfig.from_dict(generation_config)
    config = config.update(**kwargs) if kwargs else config
    fill = {}
    if config.eos_token_id is None:
        eos = tokenizer.eos_token_id if tokenizer is not None else getattr(model.config, "eos_token_id", None)
        fill["eos_token_id"] = eos
    if config.pad_token_id is None:
        pad = tokenizer.pad_token_id if tokenizer is not None else None
        fill["pad_token_id"] = pad if pad is not None else (config.eos_ids or [0])[0]
    if config.use_past is None:
        fill["use_past"] = bool(getattr(model.config, "generation", {}).get("use_past", False))
    return config.update(**fill) if fill else config


class _StopChecker:
    """Marks rows done on an eos id or when the decoded continuation contains a stop string."""

    def __init__(self, config: GenerationConfig, tokenizer):
        self.eos = set(config.eos_ids)
        self.stop_strings = list(config.stop_strings or [])
        if self.stop_strings and tokenizer is None:
            raise ValueError("generation_config.stop_strings needs a tokenizer to decode the output; pass tokenizer=")
        self.tokenizer = tokenizer

    def is_done(self, new_ids: List[int]) -> bool:
        if new_ids and new_ids[-1] in self.eos:
            return True
        if self.stop_strings:
            text = self.tokenizer.decode(new_ids, skip_special_tokens=True)
            return any(s in text for s in self.stop_strings)
        return False


def generate(model, inputs: Prompts, generation_config: Optional[Union[GenerationConfig, dict]] = None,
             tokenizer=None, streamer=None, **kwargs) -> List[List[int]]:
    """New token ids per prompt (prompt excluded; a final eos or stop-string token included).

    `inputs`: a text, a list of texts (tokenized with `tokenizer`), a list of ids or a list of id lists.
    Prompts of different lengths are left-padded into one batch. `kwargs` override generation_config keys;
    with use_chat_template each text prompt is sent as a user turn in the tokenizer's chat template.
    With generation_config.use_past (default: the model's model_config.use_past) the static KV cache is used.
    """
    config = _resolve_config(model, generation_config, tokenizer, kwargs)
    prompts = _prompt_ids(inputs, tokenizer, bool(config.use_chat_template))
    if streamer is not None and (len(prompts) > 1 or config.num_beams > 1):
        raise ValueError("a streamer needs a single prompt and num_beams: 1")
    longest = max(len(p) for p in prompts)
    budget = config.new_token_budget(longest)
    if budget == 0:
        return [[] for _ in prompts]
    if config.num_beams > 1:
        return _beam_search(model, prompts, config, tokenizer, budget)
    if streamer is not None:
        streamer.put(np.array(prompts[0]))
    runner, prompt_len = make_runner(model, len(prompts), longest, budget, config.use_past)
    ids, pad = _left_pad(prompts, prompt_len, config.pad_token_id)
    logits = runner.start(ids, pad)
    outputs = sample_loop(runner, logits, prompts, config, budget, _StopChecker(config, tokenizer), streamer)
    if streamer is not None:
        streamer.end()
    return outputs


def _left_pad(prompts: List[List[int]], length: int, pad_id: int):
    ids = np.full((len(prompts), length), pad_id, np.int32)
    for row, p in enumerate(prompts):
        ids[row, length - len(p):] = p
    return ids, np.array([length - len(p) for p in prompts], np.int32)


def sample_loop(runner, logits: np.ndarray, prompts: List[List[int]], config: GenerationConfig, budget: int,
                stop: _StopChecker, streamer=None) -> List[List[int]]:
    """Greedy or sampled decoding from the prompt logits; one runner.step per generated token."""
    rng = np.random.default_rng(config.seed)
    outputs: List[List[int]] = [[] for _ in prompts]
    done = np.zeros(len(prompts), bool)
    for i in range(budget):
        if i < config.min_new_tokens and stop.eos:
            logits = logits.copy()
            logits[:, sorted(stop.eos)] = -np.inf
        seen = [np.array(p + o) for p, o in zip(prompts, outputs)] if config.repetition_penalty != 1.0 else []
        tokens = choose_tokens(logits, seen, config, rng)
        tokens = np.where(done, config.pad_token_id, tokens)
        for row in np.flatnonzero(~done):
            outputs[row].append(int(tokens[row]))
            done[row] = stop.is_done(outputs[row])
        if streamer is not None:
            streamer.put(tokens[:1])
        if done.all() or i == budget - 1:
            break
        logits = runner.step(tokens)
    return outputs


def _beam_search(model, prompts, config: GenerationConfig, tokenizer, budget: int) -> List[List[int]]:
    k = config.num_beams
    expanded = [p for p in prompts for _ in range(k)]
    runner, prompt_len = make_runner(model, len(expanded), max(len(p) for p in prompts), budget, config.use_past)
    ids, pad = _left_pad(expanded, prompt_len, config.pad_token_id)
    logits = runner.start(ids, pad)
    return beam_search_loop(runner, logits, prompts, config, budget, _StopChecker(config, tokenizer))


def beam_search_loop(runner, logits: np.ndarray, prompts: List[List[int]], config: GenerationConfig,
                     budget: int, stop: _StopChecker) -> List[List[int]]:
    """Beam search: keep the k best partial continuations per prompt by summed log-probability.

    A finished hypothesis scores sum_logprob / new_tokens ** length_penalty. A prompt is done when it has k
    finished hypotheses and no live beam can beat the worst of them (the live beam's score can only fall).
    """
    k, n = config.num_beams, len(prompts)
    beams: List[List[int]] = [[] for _ in range(n * k)]
    scores = np.tile(np.r_[0.0, np.full(k - 1, -np.inf)], n)  # identical beams at first: expand only one
    finished: List[List[tuple]] = [[] for _ in range(n)]
    done = np.zeros(n, bool)

    def norm(score, length):
        return score / max(length, 1) ** config.length_penalty

    for i in range(budget):
        seen = [np.array(prompts[r // k] + b) for r, b in enumerate(beams)] if config.repetition_penalty != 1 else []
        logp = log_softmax(apply_repetition_penalty(logits.astype(np.float64), seen, config.repetition_penalty))
        if i < config.min_new_tokens and stop.eos:
            logp[:, sorted(stop.eos)] = -np.inf
        total = (scores[:, None] + logp).reshape(n, -1)  # (n, k * vocab)
        vocab = logp.shape[-1]
        rows, tokens, new_scores = [], [], []
        for b in range(n):
            if done[b]:  # keep feeding something so the batch shape stays fixed
                rows += [b * k] * k
                tokens += [config.pad_token_id] * k
                new_scores += [-np.inf] * k
                continue
            order = np.argsort(-total[b], kind="stable")[:2 * k]
            picked = 0
            for rank, flat in enumerate(order):
                row, token = b * k + flat // vocab, int(flat % vocab)
                candidate = beams[row] + [token]
                if stop.is_done(candidate):
                    if rank < k:
                        finished[b].append((norm(total[b, flat], len(candidate)), candidate))
                    continue
                rows.append(row)
                tokens.append(token)
                new_scores.append(total[b, flat])
                picked += 1
                if picked == k:
                    break
            for _ in range(k - picked):  # every candidate ended: fill with dead beams
                rows.append(b * k)
                tokens.append(config.pad_token_id)
                new_scores.append(-np.inf)
            finished[b].sort(key=lambda h: -h[0])
            finished[b] = finished[b][:k]
            if len(finished[b]) == k and norm(max(new_scores[-k:]), i + 1) <= finished[b][-1][0]:
                done[b] = True
        beams = [beams[r] + [t] for r, t in zip(rows, tokens)]
        scores = np.array(new_scores)
        if done.all() or i == budget - 1:
            break
        rows = np.array(rows)
        runner.reorder(rows)
        logits = runner.step(np.array(tokens))
    results = []
    for b in range(n):
        hyps = list(finished[b])
        if not done[b]:
            hyps += [(norm(scores[b * k + j], len(beams[b * k + j])), beams[b * k + j]) for j in range(k)]
        results.append(max(hyps, key=lambda h: h[0])[1])
    return results
