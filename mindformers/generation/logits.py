"""Next-token choice from fp32 logits on the host: repetition penalty, temperature, top-k, top-p, sampling."""
from typing import List

import numpy as np

from .config import GenerationConfig


def apply_repetition_penalty(logits: np.ndarray, seen: List[np.ndarray], penalty: float) -> np.ndarray:
    """CTRL-style penalty (Keskar et al. 2019): tokens already present get logit/penalty if > 0, else *penalty."""
    if penalty == 1.0:
        return logits
    logits = logits.copy()
    for row, ids in enumerate(seen):
        ids = np.unique(ids)
        picked = logits[row, ids]
        logits[row, ids] = np.where(picked > 0, picked / penalty, picked * penalty)
    return logits


def warp(logits: np.ndarray, config: GenerationConfig) -> np.ndarray:
    """Temperature, then top-k, then top-p (nucleus) filtering; filtered logits become -inf."""
    logits = logits / config.temperature
    vocab = logits.shape[-1]
    if 0 < config.top_k < vocab:
        kth = np.partition(logits, vocab - config.top_k, axis=-1)[:, vocab - config.top_k][:, None]
        logits = np.where(logits < kth, -np.inf, logits)
    if config.top_p < 1.0:
        order = np.argsort(-logits, axis=-1, kind="stable")
        sorted_logits = np.take_along_axis(logits, order, -1)
        probs = np.exp(sorted_logits - sorted_logits[:, :1])
        probs /= probs.sum(-1, keepdims=True)
        # Keep the smallest prefix whose mass reaches top_p: a token is dropped if the mass before it already does.
        drop_sorted = np.cumsum(probs, -1) - probs >= config.top_p
        drop = np.zeros_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, -1)
        logits = np.where(drop, -np.inf, logits)
    return logits


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def choose_tokens(logits: np.ndarray, seen: List[np.ndarray], config: GenerationConfig,
                  rng: np.random.Generator) -> np.ndarray:
    """Next token per row (B,) from logits (B, vocab): argmax when greedy, else a sample from the warped softmax."""
    logits = apply_repetition_penalty(logits.astype(np.float64), seen, config.repetition_penalty)
    if not config.do_sample:
        return logits.argmax(-1)
    probs = np.exp(log_softmax(warp(logits, config)))
    # Inverse-CDF sampling from one uniform per row keeps runs reproducible for a given seed.
    cdf = np.cumsum(probs, -1)
    u = rng.random((logits.shape[0], 1)) * cdf[:, -1:]
    return np.minimum((cdf < u).sum(-1), logits.shape[-1] - 1)
