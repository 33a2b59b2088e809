"""Putting what was read from a checkpoint file into our models: named arrays into a network's parameters, and
model_config overrides onto a config. Shared by Hugging Face directories (pretrained.py) and GGUF files."""
from typing import Dict

import mindspore as ms
import numpy as np

from ..base import is_step_state
from ..config_2x import translate_2x

# Buffers some HF checkpoints carry that are not parameters (we recompute RoPE tables from the config).
_IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)


def load_state_dict(network, weights: Dict[str, np.ndarray], source: str):
    """Copy name -> array into `network` (cast to each parameter's dtype); any mismatch is an error."""
    params = {p.name: p for p in network.get_parameters()}
    tied = getattr(network.config, "tie_word_embeddings", False)
    weights = {n: w for n, w in weights.items() if not n.endswith(_IGNORED_SUFFIXES)}
    if tied:
        weights.pop("lm_head.weight", None)  # some exports keep the tied copy
    missing = sorted(n for n in set(params) - set(weights) if not is_step_state(n))
    unexpected = sorted(set(weights) - set(params))
    mismatched = [f"{n}: file {tuple(weights[n].shape)} vs model {tuple(params[n].shape)}"
                  for n in sorted(set(params) & set(weights)) if tuple(weights[n].shape) != tuple(params[n].shape)]
    problems = []
    if missing:
        hint = " (set tie_word_embeddings: true if lm_head shares the embedding)" \
            if missing == ["lm_head.weight"] else ""
        problems.append(f"missing {len(missing)}: {', '.join(missing[:12])}{hint}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)}: {', '.join(unexpected[:12])}")
    if mismatched:
        problems.append(f"shape mismatch: {'; '.join(mismatched[:12])}")
    if problems:
        raise ValueError(f"{source} does not fit {type(network).__name__}: " + " | ".join(problems))
    for name, param in params.items():
        if name in weights:  # the others are step state (is_step_state), which stays as initialised
            param.set_data(ms.Tensor(np.asarray(weights[name], np.float32), dtype=param.dtype))


def with_overrides(config, overrides: dict, source: str):
    """`config` rebuilt with model_config `overrides` (a `type` key must name its class)."""
    overrides = dict(overrides)
    wanted = overrides.pop("type", None)
    if wanted not in (None, type(config).__name__):
        raise ValueError(f"model_config.type {wanted} does not match {source} ({type(config).__name__}); "
                         f"remove the key or fix it")
    if not overrides:
        return config
    base = config.to_dict()
    return type(config)(**{**base, **translate_2x(overrides, type(config), base)})
