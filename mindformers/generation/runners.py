"""Compiled decoding graphs: one graph for the prompt, one per generated token, with fixed shapes.

The cache holds S slots per row. Prompts are left-padded to a bucket length P and occupy slots [0, P); token
i of the continuation goes to slot P + i for every row. A row with `pad` leading pad tokens sees only slots
>= pad, and its token at slot s has position s - pad, so a padded row computes exactly what it would alone.
"""
import weakref
from typing import Tuple

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops


class _Prefill(nn.Cell):
    def __init__(self, model):
        super().__init__(auto_prefix=False)  # keep the model's parameter names as they are
        self.model = model

    @ms.jit
    def construct(self, input_ids, positions, mask, kv_caches):
        return self.model.prefill(input_ids, positions, mask, kv_caches)


class _Decode(nn.Cell):
    def __init__(self, model):
        super().__init__(auto_prefix=False)  # keep the model's parameter names as they are
        self.model = model

    @ms.jit
    def construct(self, input_ids, positions, mask, kv_caches, slot):
        return self.model.decode(input_ids, positions, mask, kv_caches, slot)


class _Forward(nn.Cell):
    def __init__(self, model):
        super().__init__(auto_prefix=False)  # keep the model's parameter names as they are
        self.model = model

    @ms.jit
    def construct(self, input_ids, positions, mask):
        return self.model.forward_positions(input_ids, positions, mask)


# Graph wrappers per model, so a second generate() call reuses the compiled graphs (compiling takes seconds).
_GRAPHS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _graphs(model) -> dict:
    if model not in _GRAPHS:
        _GRAPHS[model] = {"prefill": _Prefill(model), "decode": _Decode(model), "forward": _Forward(model)}
    return _GRAPHS[model]


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
        self.graphs = _graphs(model)
        self.model = model
        self.batch_size, self.prompt_len, self.cache_len = batch_size, prompt_len, cache_len
        self.kv_caches = None
        self.pad = np.zeros(batch_size, np.int32)
        self.slot = prompt_len  # where the next token goes

    def start(self, input_ids: np.ndarray, pad: np.ndarray) -> np.ndarray:
        """Run left-padded prompts (B, P) with `pad` leading pads per row; logits (B, vocab) of the next token."""
        self.pad = pad.astype(np.int32)
        self.slot = self.prompt_len
        positions = np.maximum(np.arange(self.prompt_len)[None] - self.pad[:, None], 0).astype(np.int32)
        caches = self.model.init_kv_caches(self.batch_size, self.cache_len)
        logits, self.kv_caches = self.graphs["prefill"](
            Tensor(input_ids.astype(np.int32)), Tensor(positions), Tensor(prompt_mask(self.pad, self.prompt_len)),
            ms.mutable(caches))
        return logits.asnumpy()

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """Feed one token per row (B,) at the next slot; logits (B, vocab) of the token after it."""
        if self.slot >= self.cache_len:
            raise ValueError(f"KV cache full ({self.cache_len} slots)")
        slots = np.arange(self.cache_len)
        mask = (slots[None, :] <= self.slot) & (slots[None, :] >= self.pad[:, None])  # (B, S)
        positions = (self.slot - self.pad)[:, None].astype(np.int32)  # (B, 1)
        logits, self.kv_caches = self.graphs["decode"](
            Tensor(tokens.reshape(-1, 1).astype(np.int32)), Tensor(positions), Tensor(mask[:, None, :]),
            ms.mutable(self.kv_caches), Tensor(slots == self.slot))
        self.slot += 1
        return logits.asnumpy()

    def reorder(self, rows: np.ndarray):
        """Keep cache rows `rows` (beam search): row i becomes a copy of old row rows[i]."""
        index = Tensor(rows.astype(np.int32))
        self.kv_caches = tuple(tuple(ops.gather(c, index, 0) for c in kv) for kv in self.kv_caches)
        self.pad = self.pad[rows]


class FullRunner:
    """No-cache decoding (use_past False): every step reruns the whole fixed-length (B, S) buffer in one graph."""

    def __init__(self, model, batch_size: int, prompt_len: int, cache_len: int):
        self.forward = _graphs(model)["forward"]
        self.prompt_len, self.cache_len = prompt_len, cache_len
        self.ids = np.zeros((batch_size, cache_len), np.int32)
        self.pad = np.zeros(batch_size, np.int32)
        self.slot = prompt_len

    def _logits_at(self, slot: int) -> np.ndarray:
        positions = np.maximum(np.arange(self.cache_len)[None] - self.pad[:, None], 0).astype(np.int32)
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
