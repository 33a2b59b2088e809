"""Hugging Face directories: build a model from config.json + safetensors, and save one back.

Our parameter names equal HF's and Dense weights are (out, in) like torch, so weights load as they are.
"""
import json
import logging
import os
from typing import Optional

import numpy as np

from ...tools.paths import resolve_repo_path
from ...tools.textfile import read_json
from ...modules.moe import is_step_state
from ..config_2x import YARN_KEYS, translate_2x
from .families import HF_FAMILIES, family_of, family_of_config
from .gguf import read_gguf
from .loading import load_state_dict, with_overrides
from ...checkpoint.safetensors_io import read_weights_dir, save_weights_dir

logger = logging.getLogger("mindformers")

CONFIG_FILE = "config.json"
# model_config keys checked together: position_embedding_type: yarn needs its factor and parameters
# model_config keys that size a model: with pretrained_model_dir its config.json rules them, and a YAML value that
# says otherwise is an error. Intended overrides are not among them: seq_length and max_position_embedding (train
# shorter, extend the RoPE table), RoPE scaling, dtypes, token ids and generation keys.
SIZE_KEYS = ("hidden_size", "num_layers", "num_heads", "n_kv_heads", "intermediate_size", "head_dim", "vocab_size",
             "num_experts", "n_routed_experts", "num_experts_per_tok", "moe_intermediate_size", "n_shared_experts",
             "first_k_dense_replace", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim",
             "v_head_dim")
_HF_NAMES = {"num_layers": "num_hidden_layers", "num_heads": "num_attention_heads", "n_kv_heads": "num_key_value_heads",
             "num_experts": "num_experts/num_local_experts"}
ROPE_GROUP = set(YARN_KEYS) | {"position_embedding_type", "scaling_factor", "rotary_scaling_factor", "rope_type",
                                "factor"}


def read_hf_config(model_dir: str) -> dict:
    """config.json of an HF directory as a dict."""
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"pretrained_model_dir {model_dir} is not a directory")
    path = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained_model_dir {model_dir} has no {CONFIG_FILE} (is it a Hugging Face "
                                f"model directory?)")
    config = read_json(path)
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object of model settings, got {type(config).__name__} "
                         f"(a Hugging Face config.json)")
    return config


def config_from_hf(model_dir: str, overrides: Optional[dict] = None):
    """Our model config from `model_dir`/config.json; `overrides` (model_config keys, ours or upstream 2.x
    names) win over it."""
    hf = read_hf_config(model_dir)
    family = family_of(hf, os.path.join(model_dir, CONFIG_FILE))
    overrides = dict(overrides or {})
    wanted = overrides.pop("type", None)
    if wanted not in (None, family.config_class.__name__):
        raise ValueError(f"model_config.type {wanted} does not match {model_dir}/{CONFIG_FILE} model_type "
                         f"{family.model_type!r} ({family.config_class.__name__}); remove the key or fix it")
    kwargs = {k: v for k, v in family.from_hf(hf).items() if v is not None}
    contradictions = size_contradictions(overrides, family, kwargs, os.path.join(model_dir, CONFIG_FILE))
    if contradictions:
        raise ValueError("; ".join(message for _, message in contradictions))
    # the YAML keys may be in the upstream 2.x vocabulary (params_dtype, hidden_dropout, ...)
    overrides = translate_2x(overrides, family.config_class, kwargs)
    kwargs.update(overrides)
    # a shorter seq_length from the YAML must not shrink the RoPE table below config.json's
    if "seq_length" in overrides and "max_position_embedding" not in overrides:
        kwargs["max_position_embedding"] = max(kwargs["max_position_embedding"], kwargs["seq_length"])
    return family.config_class(**kwargs)


def size_contradictions(model_config: dict, family, base: dict, path: str) -> list:
    """(key, message) for each size key (SIZE_KEYS, in our or the 2.x vocabulary) that `model_config` sets other
    than config.json at `path` does (`base`: our kwargs from it)."""
    problems = []
    for key, value in model_config.items():
        if key in ROPE_GROUP or key == "type":
            continue
        try:
            ours = translate_2x({key: value}, family.config_class)
        except ValueError:
            continue  # a bad key is reported on its own
        for target, new in ours.items():
            if target in SIZE_KEYS and base.get(target) is not None and new != base[target]:
                problems.append((key, f"model_config.{key}: {value!r} contradicts {path} "
                                      f"({_HF_NAMES.get(target, target)}: {base[target]!r}); config.json sets the "
                                      f"model's sizes: remove the key from the YAML"))
    return problems


def _split_section(model_config: dict):
    """A type-less model_config naming its model_type: (family, our kwargs from its config.json keys, the rest)."""
    where = "model.model_config"
    family = family_of(model_config, where)
    defaults = family.to_hf(family.config_class())  # upstream too falls back on its config class's defaults
    hf_names = set(defaults) | {"model_type"}
    hf = {**{k: v for k, v in defaults.items() if v is not None},
          **{k: v for k, v in model_config.items() if k in hf_names}}
    if hf.get("hidden_act") == "swiglu":  # upstream's name for the SiLU-gated MLP that config.json calls silu
        hf["hidden_act"] = "silu"
    try:
        base = {k: v for k, v in family.from_hf(hf).items() if v is not None}
    except ValueError as err:  # from_hf speaks of config.json; here the keys are the section's
        raise ValueError(str(err).replace("config.json ", f"{where}.", 1)) from None
    return family, base, {k: v for k, v in model_config.items() if k not in hf_names}


def config_from_section(model_config: dict):
    """(config, model class) from a type-less `model_config` that names its Hugging Face `model_type` (upstream
    2.x pretrain YAMLs): config.json keys and 2.x keys side by side in one section, no directory."""
    family, kwargs, rest = _split_section(model_config)
    kwargs.update(translate_2x(rest, family.config_class, kwargs))
    return family.config_class(**kwargs), family.model_class


def section_problems(model_config: dict, model_dir: Optional[str]) -> list:
    """Every problem of a type-less model_config (2.x vocabulary) read with `model_dir`'s config.json (or, without
    one, its own model_type and config.json keys), as (key or None, message): each key on its own, then all."""
    model_config = {k: v for k, v in dict(model_config).items() if k != "type"}
    if model_dir:
        hf = read_hf_config(resolve_repo_path(model_dir, "pretrained_model_dir"))
        family = family_of(hf, os.path.join(model_dir, CONFIG_FILE))
        base = {k: v for k, v in family.from_hf(hf).items() if v is not None}
        keys = model_config
    else:
        family, base, keys = _split_section(model_config)
    # the RoPE/YaRN keys only make sense together: tried as one group, every other key on its own
    rope = {k: v for k, v in keys.items() if k in ROPE_GROUP}
    problems = size_contradictions(keys, family, base, os.path.join(model_dir, CONFIG_FILE)) if model_dir else []
    for group in [{k: v} for k, v in keys.items() if k not in rope] + ([rope] if rope else []):
        try:
            translate_2x(group, family.config_class, base)
        except ValueError as err:
            problems.append((next(iter(group)) if len(group) == 1 else None, str(err)))
    if not problems:
        try:
            if model_dir:
                config_from_hf(resolve_repo_path(model_dir, "pretrained_model_dir"), model_config)
            else:
                config_from_section(model_config)
        except ValueError as err:
            problems.append((None, str(err)))
    return problems


def model_class_for(model_dir: str) -> type:
    """Our model class for the directory's model_type."""
    return family_of(read_hf_config(model_dir), os.path.join(model_dir, CONFIG_FILE)).model_class


def load_hf_weights(network, model_dir: str, allow_pickle: bool = False):
    """Load the safetensors weights of `model_dir` (single file or sharded) into `network`."""
    weights = read_weights_dir(model_dir, allow_pickle)
    family = family_of_config(network.config)
    if family.weights_from_hf is not None:
        weights = family.weights_from_hf(weights, network.config)
    load_state_dict(network, weights, f"pretrained_model_dir {model_dir}")


def from_pretrained(model_dir: str, arch: Optional[str] = None, allow_pickle: bool = False, **overrides):
    """Model built from an HF directory's config.json (`overrides` are model_config keys) with its weights.

    `model_dir` may also be a .gguf file (Llama/Qwen2, see hf/gguf.py).

    `arch` (the YAML's model.arch.type), if given, must name the directory's model class.
    """
    model_dir = resolve_repo_path(model_dir, "pretrained_model_dir")
    if os.path.isfile(model_dir) and model_dir.endswith(".gguf"):
        config, weights, model_class = read_gguf(model_dir)
        config = with_overrides(config, overrides, model_dir)
    else:
        config, weights = config_from_hf(model_dir, overrides), None
        model_class = model_class_for(model_dir)
    if arch not in (None, model_class.__name__):
        raise ValueError(f"model.arch.type {arch} does not match {model_dir}/{CONFIG_FILE} "
                         f"({model_class.__name__}); remove the key or fix it")
    network = model_class(config)
    if weights is None:
        load_hf_weights(network, model_dir, allow_pickle)
    else:
        load_state_dict(network, weights, f"GGUF file {model_dir}")
    return network


def hf_config_dict(config) -> dict:
    """The HF config.json dict for our config."""
    family = family_of_config(config)
    hf = {"architectures": list(family.architectures), "model_type": family.model_type, **family.to_hf(config)}
    # null is meaningful for these keys (DeepSeek's q_lora_rank: null = no low-rank query projection)
    return {k: v for k, v in hf.items() if v is not None or k in ("rope_scaling", "pad_token_id", "q_lora_rank")}


def save_pretrained(network, save_dir: str, dtype: str = "float32", max_shard_size: int = 5 * 2**30) -> str:
    """Write config.json + model.safetensors (sharded above `max_shard_size` bytes) loadable by HF transformers."""
    os.makedirs(save_dir, exist_ok=True)
    hf = hf_config_dict(network.config)
    hf["torch_dtype"] = dtype
    with open(os.path.join(save_dir, CONFIG_FILE), "w", encoding="utf-8") as f:
        json.dump(hf, f, indent=2, sort_keys=True)
    weights = {p.name: p.asnumpy().astype(np.float32, copy=False) for p in network.get_parameters()
               if not is_step_state(p.name)}
    family = family_of_config(network.config)
    if family.weights_to_hf is not None:
        weights = family.weights_to_hf(weights, network.config)
    files = save_weights_dir(save_dir, weights, dtype, max_shard_size)
    logger.info("saved %s (%s) to %s", hf["architectures"][0], ", ".join(files), save_dir)
    return save_dir


def supported_model_types():
    """HF model_type values that load."""
    return sorted(HF_FAMILIES)
