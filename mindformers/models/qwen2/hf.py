"""Hugging Face interop for Qwen2 / Qwen2.5 (model_type "qwen2"): config.json keys both ways."""
from ..hf.families import check_hf_value, fixed_head_dim_from_hf, llama_to_hf, register_hf_family
from .qwen2 import Qwen2Config, Qwen2ForCausalLM


def qwen2_from_hf(hf: dict) -> dict:
    """Qwen2Config kwargs from a qwen2 config.json (q/k/v always have biases)."""
    check_hf_value(hf, "use_sliding_window", (False, None), "sliding-window attention is not implemented")
    return fixed_head_dim_from_hf({**hf, "attention_bias": True})


def qwen2_to_hf(config: Qwen2Config) -> dict:
    """A qwen2 config.json from our config."""
    hf = llama_to_hf(config)
    for key in ("attention_bias", "mlp_bias", "pretraining_tp", "head_dim"):
        hf.pop(key)
    return {**hf, "use_sliding_window": False}


register_hf_family("qwen2", ("Qwen2ForCausalLM",), Qwen2Config, Qwen2ForCausalLM, qwen2_from_hf, qwen2_to_hf)
