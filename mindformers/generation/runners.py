"""Compiled decoding graphs: one graph for the prompt, one per generated token, with fixed shapes.

The cache holds S slots per row. Prompts are left-padded to a bucket length P and occupy slots [0, P); token
i of the continuation goes to slot P + i for every row. A row with `pad` leading pad tokens sees only slots
>= pad, and its token at slot s has position s - pad, so a padded row computes exactly what it would alone.
"""
import sys
import weakref
from collections import OrderedDict
from typing import Tuple

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops


class _CachedGraphs(nn.Cell):
    """The prompt and decode graphs over one KV cache of fixed (batch, slots) shape.

    The cache is a tuple of Parameters that both graphs write in place (see modules.attention.write_kv_cache),
    so no cache tensor crosses the graph boundary in a step. It is reused by every generate() call of the same
    shape (prefill rewrites all of it), so one shape's cache is not for two generations at once.
    """

    def __init__(self, model, batch_size: int, cache_len: int):
        super().__init__(auto_prefix=False)  # keep the model's parameter names as they are
        self.model = model
        self.caches = ms.ParameterTuple([
            Parameter(cache, name=f"kv_cache.{layer}.{i}", requires_grad=False)
            for layer, pair in enumerate(model.init_kv_caches(batch_size, cache_len)) for i, cache in enumerate(pair)])

    def _pairs(self):
        return tuple((self.caches[i], self.caches[i + 1]) for i in range(0, len(self.caches), 2))

    @ms.jit
    def prefill(self, input_ids, positions, mask):
        return self.model.prefill(input_ids, positions, mask, self._pairs())[0]

    @ms.jit
    def decode(self, input_ids, positions, mask, slot):
        return self.model.decode(input_ids, positions, mask, self._pairs(), slot)[0]

    @ms.jit
    def reorder(self, rows):
        """Row i of every cache becomes a copy of old row rows[i] (beam search), in place."""
        for cache in self.caches:
            ops.assign(cache, ops.gather(cache, rows, 0))
        return rows


class _Forward(nn.Cell):
    def __init__(self, model):
        super().__init__(auto_prefix=False)  # keep the model's parameter names as they are
        self.model = model

    @ms.jit
    def construct(self, input_ids, positions, mask):
        return self.model.forward_positions(input_ids, positions, mask)


# Graph wrappers per model, so a second generate() call reuses the compiled graphs (compiling takes seconds).
_GRAPHS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
# Cached-decoding graphs (and their caches) kept per model: the most recently used (batch, slots) shapes.
CACHE_SHAPES_KEPT = 4


def _graphs(model) -> dict:
    # a network whose cells were swapped (pet.apply_lora, merge_lora) has a new _create_time: compile afresh
    stamp = getattr(model, "_create_time", None)
    entry = _GRAPHS.get(model)
    if entry is None or entry["stamp"] != stamp:
        entry = _GRAPHS[model] = {"forward": _Forward(model), "cached": OrderedDict(), "stamp": stamp,
                                  "compiled": set()}
    return entry


def _before_compile(model, key: tuple, what: str):
    """One line on stderr before MindSpore compiles a graph (shape) of `model` for the first time: on a deep
    model that takes minutes, and the wait should not look like a hang."""
    compiled = _graphs(model)["compiled"]
    if key not in compiled:
        compiled.add(key)
        print(f"compiling ({getattr(model.config, 'num_layers', '?')} layers): {what}...", file=sys.stderr,
              flush=True)


def _cached_graphs(model, batch_size: int, cache_len: int) -> _CachedGraphs:
    entry = _graphs(model)
    kept = entry["cached"]
    key = (batch_size, cache_len)
    if key not in kept:
        kept[key] = _CachedGraphs(model, batch_size, cache_len)
        while len(kept) > CACHE_SHAPES_KEPT:
            dropped, _ = kept.popitem(last=False)
            # its graphs compile again if the shape comes back
            entry["compiled"] = {k for k in entry["compiled"] if k[0] == "forward" or k[1:3] != dropped}
    kept.move_to_end(key)
    return kept[key]


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def prompt_mask(pad: np.ndarray, length: int) -> np.ndarray:
    """(B, L, L) bool: causal, and no row attends to its own left padding (pad queries see themselves)."""
    slots = np.arange(length)
    causal = slots[None, :] <= slots[:, None]
    allowed = causal[None] & (slots[None, None, :] >= pad[:, None, None])
    return allowed | np.eye(length, dtype=bool)[None]


class CachedRunner:
    """Static-KV-cache decoding: `start` runs the prompt graph, each `step` one decode graph call."""

    def __init__(self, model, batch_size: int, prompt_len: int, cache_len: int):
        self.graphs = _cached_graphs(model, batch_size, cache_len)
        self.model = model
        self.batch_size, self.prompt_len, self.cache_len = batch_size, prompt_len, cache_len
        self.pad = np.zeros(batch_size, np.int32)
        self.slot = prompt_len  # where the next token goes

    def start(self, input_ids: np.ndarray, pad: np.ndarray) -> np.ndarray:
        """Run left-padded prompts (B, P) with `pad` leading pads per row; logits (B, vocab) of the next token."""
        self.pad = pad.astype(np.int32)
        self.slot = self.prompt_len
        positions = np.maximum(np.arange(self.prompt_len)[None] - self.pad[:, None], 0).astype(np.int32)
        _before_compile(self.model, ("prefill", self.batch_size, self.cache_len, self.prompt_len),
                        f"prompt graph, batch {self.batch_size} x {self.prompt_len} tokens")
        logits = self.graphs.prefill(Tensor(input_ids.astype(np.int32)), Tensor(positions),
                                     Tensor(prompt_mask(self.pad, self.prompt_len)))
        return logits.asnumpy()

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """Feed one token per row (B,) at the next slot; logits (B, vocab) of the token after it."""
        if self.slot >= self.cache_len:
            raise ValueError(f"KV cache full ({self.cache_len} slots)")
        slots = np.arange(self.cache_len)
        mask = (slots[None, :] <= self.slot) & (slots[None, :] >= self.pad[:, None])  # (B, S)
        positions = (self.slot - self.pad)[:, None].astype(np.int32)  # (B, 1)
        _before_compile(self.model, ("decode", self.batch_size, self.cache_len),
                        f"decode graph, batch {self.batch_size}, {self.cache_len} cache slots")
        logits = self.graphs.decode(Tensor(tokens.reshape(-1, 1).astype(np.int32)), Tensor(positions),
                                    Tensor(mask[:, None, :]), Tensor(np.array([self.slot], np.int32)))
        self.slot += 1
        return logits.asnumpy()

    def reorder(self, rows: np.ndarray):
        """Keep cache rows `rows` (beam search): row i becomes a copy of old row rows[i]."""
        self.graphs.reorder(Tensor(rows.astype(np.int32)))
        self.pad = self.pad[rows]


class FullRunner:
    """No-cache decoding (use_past False): every step reruns the whole fixed-length (B, S) buffer in one graph."""

    def __init__(self, model, batch_size: int, prompt_len: int, cache_len: int):
        self.forward = _graphs(model)["forward"]
        self.model = model
        self.prompt_len, self.cache_len = prompt_len, cache_len
        self.ids = np.zeros((batch_size, cache_len), np.int32)
        self.pad = np.zeros(batch_size, np.int32)
        self.slot = prompt_len

    def _logits_at(self, slot: int) -> np.ndarray:
        positions = np.maximum(np.arange(self.cache_len)[None] - self.pad[:, None], 0).astype(np.int32)
        _before_compile(self.model, ("forward", *self.ids.shape), f"forward graph, batch {self.ids.shape[0]} x "
                                                                  f"{self.cache_len} tokens")
        logits = self.forward(Tensor(self.ids), Tensor(positions), Tensor(prompt_mask(self.pad, self.cache_len)))
        return logits.asnumpy()[:, slot]

    def start(self, input_ids: np.ndarray, pad: np.ndarray) -> np.ndarray:
        self.pad = pad.astype(np.int32)
        self.ids[:, :self.prompt_len] = input_ids
        self.slot = self.prompt_len
        return self._logits_at(self.prompt_len - 1)

    def step(self, tokens: np.ndarray) -> np.ndarray:
        if self.slot >= self.cache_len:
            raise ValueError(f"decode buffer full ({self.cache_len} slots)")
        self.ids[:, self.slot] = tokens
        self.slot += 1
        return self._logits_at(self.slot - 1)

    def reorder(self, rows: np.ndarray):
        self.ids = self.ids[rows]
        self.pad = self.pad[rows]


def make_runner(model, batch_size: int, longest_prompt: int, max_new_tokens: int, use_past: bool,
                bucket: int = 32) -> Tuple[object, int]:
    """A runner sized for the batch, and the padded prompt length P (prompts must be left-padded to it)."""
    max_position = int(model.config.max_position_embedding)
    if longest_prompt + max_new_tokens > max_position:
        raise ValueError(f"prompt ({longest_prompt} tokens) + max_new_tokens ({max_new_tokens}) exceeds "
                         f"model_config.max_position_embedding ({max_position}); shorten the prompt or lower "
                         f"max_new_tokens")
    # Buckets bound the number of distinct graph shapes (each compiles once); positions stay below max_position.
    prompt_len = round_up(longest_prompt, bucket)
    cache_len = round_up(prompt_len + max_new_tokens, bucket)
    runner = (CachedRunner if use_past else FullRunner)(model, batch_size, prompt_len, cache_len)
    return runner, prompt_len
