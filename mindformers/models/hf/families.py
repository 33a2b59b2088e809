"""Which of our config/model classes an HF `model_type` maps to, and how config.json keys translate.

Every family plugs itself in, in its own `models/<family>/hf.py`, with one `register_hf_family` call naming its
HF `model_type`, the `architectures` class name, our config and model classes, and two functions:
`from_hf(config.json dict) -> model_config kwargs` and `to_hf(config) -> config.json dict`. Llama-like families
reuse the helpers here (`llama_from_hf`, `llama_to_hf`, `moe_from_hf`) and add their own keys. This module imports
no family.
"""
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple


@dataclass(frozen=True)
class HFFamily:
    """One HF model_type and how to convert its config.json."""
    model_type: str
    architectures: Tuple[str, ...]
    config_class: type
    model_class: type
    from_hf: Callable[[dict], dict]
    to_hf: Callable[[object], dict]
    # name -> array maps between the HF checkpoint's tensors and our parameters (None: same names and layout)
    weights_from_hf: Optional[Callable[[Dict, object], Dict]] = None
    weights_to_hf: Optional[Callable[[Dict, object], Dict]] = None


HF_FAMILIES: Dict[str, HFFamily] = {}


def register_hf_family(model_type: str, architectures: Tuple[str, ...], config_class: type, model_class: type,
                       from_hf: Callable[[dict], dict], to_hf: Callable[[object], dict],
                       weights_from_hf: Optional[Callable[[Dict, object], Dict]] = None,
                       weights_to_hf: Optional[Callable[[Dict, object], Dict]] = None):
    """Make `model_type` directories loadable/savable as `model_class`.

    `weights_from_hf(tensors, config)` / `weights_to_hf(tensors, config)` convert checkpoints whose tensor names
    or packing differ from our parameters (e.g. a fused qkv projection), both ways."""
    HF_FAMILIES[model_type] = HFFamily(model_type, tuple(architectures), config_class, model_class, from_hf, to_hf,
                                       weights_from_hf, weights_to_hf)


def family_of(hf_config: dict, where: str) -> HFFamily:
    """The registered family for an HF config.json dict."""
    model_type = hf_config.get("model_type")
    if model_type not in HF_FAMILIES:
        raise ValueError(f"{where}: model_type {model_type!r} is not supported; supported: "
                         f"{', '.join(sorted(HF_FAMILIES))}")
    return HF_FAMILIES[model_type]


def family_of_config(config) -> HFFamily:
    """The registered family whose config class is exactly type(config)."""
    for family in HF_FAMILIES.values():
        if type(config) is family.config_class:
            return family
    raise ValueError(f"save_pretrained: no Hugging Face mapping for {type(config).__name__}; registered: "
                     f"{', '.join(f.config_class.__name__ for f in HF_FAMILIES.values())}")


def check_hf_value(hf: dict, key: str, allowed, why: str):
    """Refuse a config.json value outside `allowed`, saying why."""
    if key in hf and hf[key] not in allowed:
        raise ValueError(f"config.json {key}={hf[key]!r} is not supported: {why}")


def llama_from_hf(hf: dict) -> dict:
    """LlamaConfig kwargs from a Llama-style config.json."""
    check_hf_value(hf, "hidden_act", ("silu",), "the decoder uses SwiGLU with SiLU")
    check_hf_value(hf, "mlp_bias", (False, None), "the MLP projections have no bias")
    check_hf_value(hf, "pretraining_tp", (1, None), "set it to 1 (the weights are not split)")
    heads = hf["num_attention_heads"]
    max_pos = hf.get("max_position_embeddings", 2048)
    eos = hf.get("eos_token_id")
    theta, rope_scaling = _rope_from_hf(hf)
    kwargs = {
        "hidden_size": hf["hidden_size"], "intermediate_size": hf["intermediate_size"],
        "num_layers": hf["num_hidden_layers"], "num_heads": heads,
        "n_kv_heads": hf.get("num_key_value_heads") or heads, "vocab_size": hf["vocab_size"],
        "max_position_embedding": max_pos, "seq_length": max_pos,
        "rms_norm_eps": hf.get("rms_norm_eps", 1e-6), "theta": theta,
        "rope_scaling": rope_scaling, "qkv_has_bias": bool(hf.get("attention_bias", False)),
        "tie_word_embeddings": bool(hf.get("tie_word_embeddings", False)),
        "initializer_range": hf.get("initializer_range", 0.02),
    }
    # Llama 3 lists several end ids; the model config keeps the first, generation_config.json has them all.
    for key, value in (("bos_token_id", hf.get("bos_token_id")), ("eos_token_id", eos),
                       ("pad_token_id", hf.get("pad_token_id"))):
        value = value[0] if isinstance(value, list) and value else value
        if isinstance(value, int):
            kwargs[key] = value
    return kwargs


def _rope_from_hf(hf: dict):
    """(theta, rope_scaling or None) from transformers<5 keys (rope_theta, rope_scaling) or >=5 (rope_parameters)."""
    params = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    theta = float(params.pop("rope_theta", hf.get("rope_theta", 10000.0)))
    if params.get("rope_type", params.get("type", "default")) == "default":
        return theta, None
    return theta, params


def fixed_head_dim_from_hf(hf: dict) -> dict:
    """llama_from_hf for families whose head width is always hidden_size / num_heads."""
    head_dim, derived = hf.get("head_dim"), hf["hidden_size"] // hf["num_attention_heads"]
    if head_dim is not None and head_dim != derived:
        raise ValueError(f"config.json head_dim={head_dim} differs from hidden_size/num_attention_heads "
                         f"({derived}); {hf.get('model_type')} models here derive it (Qwen3 allows its own)")
    return llama_from_hf(hf)


def llama_to_hf(config) -> dict:
    """A Llama-style config.json from our config."""
    rope_scaling = config.rope_scaling
    if rope_scaling is None and config.extend_method != "None":
        factor = config.scaling_factor
        rope_scaling = {"rope_type": config.extend_method,
                        **(factor if isinstance(factor, dict) else {"factor": factor})}
    return {
        "hidden_size": config.hidden_size, "intermediate_size": config.ffn_hidden_size,
        "num_hidden_layers": config.num_layers, "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.n_kv_heads, "head_dim": config.head_dim, "vocab_size": config.vocab_size,
        "max_position_embeddings": config.max_position_embedding, "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": config.theta, "rope_scaling": rope_scaling, "attention_bias": config.qkv_has_bias,
        "attention_dropout": 0.0, "mlp_bias": False, "hidden_act": "silu", "pretraining_tp": 1,
        "tie_word_embeddings": config.tie_word_embeddings, "initializer_range": config.initializer_range,
        "bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id, "use_cache": True, "torch_dtype": "float32",
    }


def moe_from_hf(hf: dict) -> dict:
    """The MoE keys of a Mixtral / Qwen3-MoE config.json as model_config kwargs."""
    experts = hf.get("num_local_experts", hf.get("num_experts"))
    kwargs = {"num_experts": experts, "num_experts_per_tok": hf["num_experts_per_tok"],
              "router_aux_loss_coef": hf.get("router_aux_loss_coef", 0.001)}
    if "moe_intermediate_size" in hf:
        kwargs["moe_intermediate_size"] = hf["moe_intermediate_size"]
    if "norm_topk_prob" in hf:
        kwargs["norm_topk_prob"] = bool(hf["norm_topk_prob"])
    return kwargs
