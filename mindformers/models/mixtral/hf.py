"""Hugging Face interop for Mixtral (model_type "mixtral"): config.json keys both ways."""
from ..hf.families import fixed_head_dim_from_hf, llama_to_hf, moe_from_hf, register_hf_family
from .mixtral import MixtralConfig, MixtralForCausalLM


def mixtral_from_hf(hf: dict) -> dict:
    """MixtralConfig kwargs from a mixtral config.json."""
    return {**fixed_head_dim_from_hf(hf), **moe_from_hf(hf)}


def mixtral_to_hf(config: MixtralConfig) -> dict:
    """A mixtral config.json from our config."""
    hf = llama_to_hf(config)
    for key in ("attention_bias", "mlp_bias", "pretraining_tp", "head_dim"):
        hf.pop(key)
    return {**hf, "num_local_experts": config.num_experts, "num_experts_per_tok": config.num_experts_per_tok,
            "router_aux_loss_coef": config.router_aux_loss_coef}


register_hf_family("mixtral", ("MixtralForCausalLM",), MixtralConfig, MixtralForCausalLM, mixtral_from_hf,
                   mixtral_to_hf)
