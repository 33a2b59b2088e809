"""Hugging Face interop for DeepSeek-V3 (model_type "deepseek_v3"): config.json keys both ways, and skipping the
multi-token-prediction layers a checkpoint may carry. Tensor names are HF's already (see deepseek_v3.py)."""
import logging
import re
from typing import Dict

import numpy as np

from ..hf.families import llama_from_hf, llama_to_hf, register_hf_family
from .deepseek_v3 import SCORING_FUNCS, TOPK_METHODS, DeepseekV3Config, DeepseekV3ForCausalLM

logger = logging.getLogger("mindformers")

# config.json keys copied as they are (our config uses the same names).
_SAME_KEYS = ("q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
              "moe_intermediate_size", "n_routed_experts", "n_shared_experts", "num_experts_per_tok", "n_group",
              "topk_group", "first_k_dense_replace", "norm_topk_prob", "routed_scaling_factor")
_LAYER = re.compile(r"^model\.layers\.(\d+)\.")


def _require(hf: dict, key: str, allowed, why: str):
    if key in hf and hf[key] not in allowed:
        raise ValueError(f"config.json {key}={hf[key]!r} is not supported: {why}; valid: {list(allowed)}")


def deepseek_v3_from_hf(hf: dict) -> dict:
    """DeepseekV3Config kwargs from a DeepSeek-V3 config.json (transformers 4.x or 5.x keys)."""
    _require(hf, "topk_method", TOPK_METHODS, "the router implements DeepSeek-V3's bias-corrected group top-k")
    _require(hf, "scoring_func", SCORING_FUNCS, "the router scores experts with a sigmoid")
    _require(hf, "moe_layer_freq", (1,), "every layer from first_k_dense_replace on must be MoE")
    heads = hf["num_attention_heads"]
    if hf.get("num_key_value_heads") not in (None, heads):
        raise ValueError(f"config.json num_key_value_heads={hf['num_key_value_heads']} is not supported: MLA "
                         f"expands its latent into all num_attention_heads ({heads}) heads; set it to {heads}")
    rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    if rope.pop("truncate", True) is not True:
        raise ValueError("config.json rope truncate=false is not supported: YaRN's correction range is rounded "
                         "to whole dims here (truncate: true)")
    hf = {**hf, "rope_parameters": rope or None, "rope_scaling": None}
    kwargs = {**llama_from_hf(hf), **{key: hf[key] for key in _SAME_KEYS if key in hf}}
    if "q_lora_rank" in hf:
        kwargs["q_lora_rank"] = hf["q_lora_rank"] or 0  # null means a plain q_proj; 0 survives the None filter
    kwargs["n_routed_experts"] = hf.get("n_routed_experts", hf.get("num_local_experts", 256))
    kwargs["rope_interleave"] = bool(hf.get("rope_interleave", True))  # HF's default
    kwargs["num_nextn_predict_layers"] = hf.get("num_nextn_predict_layers", hf.get("num_mtp_layers", 0)) or 0
    return kwargs


def deepseek_v3_to_hf(config: DeepseekV3Config) -> dict:
    """A DeepSeek-V3 config.json from our config."""
    hf = llama_to_hf(config)
    for key in ("head_dim", "mlp_bias"):
        hf.pop(key)
    hf = {**hf, **{key: getattr(config, key) for key in _SAME_KEYS}}
    hf["q_lora_rank"] = config.q_lora_rank or None  # HF spells "no low-rank q" null
    return {**hf, "rope_interleave": config.rope_interleave,
            "topk_method": config.topk_method, "scoring_func": config.scoring_func, "moe_layer_freq": 1,
            "num_nextn_predict_layers": config.num_nextn_predict_layers}


def weights_from_hf(weights: Dict[str, np.ndarray], config: DeepseekV3Config) -> Dict[str, np.ndarray]:
    """Drop the multi-token-prediction layers (model.layers.{num_layers}...), which are not built here."""
    first, last = config.num_layers, config.num_layers + config.num_nextn_predict_layers
    kept = {}
    for name, value in weights.items():
        match = _LAYER.match(name)
        if match and first <= int(match.group(1)) < last:
            continue
        kept[name] = value
    if len(kept) < len(weights):
        logger.info("skipped %d multi-token-prediction tensors (layers %d..%d)", len(weights) - len(kept), first,
                    last - 1)
    return kept


register_hf_family("deepseek_v3", ("DeepseekV3ForCausalLM",), DeepseekV3Config, DeepseekV3ForCausalLM,
                   deepseek_v3_from_hf, deepseek_v3_to_hf, weights_from_hf=weights_from_hf)
