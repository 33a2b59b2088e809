"""Hugging Face interop for GLM-4 (model_type "glm4"): config.json keys both ways; tensor names are HF's."""
from ..hf.families import llama_from_hf, llama_to_hf, register_hf_family
from .glm4 import Glm4Config, Glm4ForCausalLM


def glm4_from_hf(hf: dict) -> dict:
    """Glm4Config kwargs from a glm4 config.json (transformers 4.x top-level keys or 5.x rope_parameters)."""
    rope = dict(hf.get("rope_parameters") or {})
    factor = rope.pop("partial_rotary_factor", hf.get("partial_rotary_factor", 0.5))  # HF's default is 0.5
    kwargs = llama_from_hf({**hf, "rope_parameters": rope or None})
    return {**kwargs, "head_dim": hf.get("head_dim"), "partial_rotary_factor": factor,
            "bos_token_id": hf.get("bos_token_id")}


def glm4_to_hf(config: Glm4Config) -> dict:
    """A glm4 config.json from our config."""
    hf = llama_to_hf(config)
    for key in ("mlp_bias", "pretraining_tp"):
        hf.pop(key)
    return {**hf, "partial_rotary_factor": config.partial_rotary_factor}


register_hf_family("glm4", ("Glm4ForCausalLM",), Glm4Config, Glm4ForCausalLM, glm4_from_hf, glm4_to_hf)
