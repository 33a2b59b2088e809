"""Putting what was read from a checkpoint file into our models: named arrays into a network's parameters, and
model_config overrides onto a config. Shared by Hugging Face directories (pretrained.py) and GGUF files."""
from typing import Dict

import numpy as np

from ...checkpoint import assign_weights
from ..config_2x import translate_2x

# Buffers some HF checkpoints carry that are not parameters (we recompute RoPE tables from the config).
_IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)


def load_state_dict(network, weights: Dict[str, np.ndarray], source: str):
    """Copy an HF-named state dict into `network` (the one loader's rules: any mismatch is an error), after
    dropping the buffers HF files carry and the copy of a tied lm_head."""
    tied = getattr(network.config, "tie_word_embeddings", False)
    weights = {n: w for n, w in weights.items() if not n.endswith(_IGNORED_SUFFIXES)}
    if tied:
        weights.pop("lm_head.weight", None)  # some exports keep the tied copy
    params = {p.name for p in network.get_parameters()}
    hint = " (set tie_word_embeddings: true if lm_head shares the embedding)" \
        if "lm_head.weight" in params and "lm_head.weight" not in weights else ""
    assign_weights(network, weights, source, missing_hint=hint)


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
