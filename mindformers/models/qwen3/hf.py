"""Hugging Face interop for Qwen3 (model_type "qwen3"): config.json keys both ways, head_dim included."""
from ..hf.families import llama_from_hf, llama_to_hf, register_hf_family
from .qwen3 import Qwen3Config, Qwen3ForCausalLM


def qwen3_from_hf(hf: dict) -> dict:
    """Qwen3Config kwargs from a qwen3 config.json (head_dim may differ from hidden_size / heads)."""
    return {**llama_from_hf(hf), "head_dim": hf.get("head_dim")}


def qwen3_to_hf(config: Qwen3Config) -> dict:
    """A qwen3 config.json from our config."""
    hf = llama_to_hf(config)
    hf.pop("mlp_bias")
    return hf


register_hf_family("qwen3", ("Qwen3ForCausalLM",), Qwen3Config, Qwen3ForCausalLM, qwen3_from_hf, qwen3_to_hf)
