"""Hugging Face interop for Qwen3-MoE (model_type "qwen3_moe"): config.json keys both ways."""
from ..hf.families import moe_from_hf, register_hf_family
from ..qwen3.hf import qwen3_from_hf, qwen3_to_hf
from .qwen3_moe import Qwen3MoeConfig, Qwen3MoeForCausalLM


def qwen3_moe_from_hf(hf: dict) -> dict:
    """Qwen3MoeConfig kwargs from a qwen3_moe config.json; every layer must be MoE."""
    if hf.get("mlp_only_layers") or hf.get("decoder_sparse_step", 1) != 1:
        raise ValueError("config.json mlp_only_layers/decoder_sparse_step: every layer must be MoE here "
                         "(mlp_only_layers: [], decoder_sparse_step: 1)")
    return {**qwen3_from_hf(hf), **moe_from_hf(hf)}


def qwen3_moe_to_hf(config: Qwen3MoeConfig) -> dict:
    """A qwen3_moe config.json from our config."""
    hf = qwen3_to_hf(config)
    return {**hf, "num_experts": config.num_experts, "num_experts_per_tok": config.num_experts_per_tok,
            "moe_intermediate_size": config.expert_ffn_size, "norm_topk_prob": config.norm_topk_prob,
            "router_aux_loss_coef": config.router_aux_loss_coef, "decoder_sparse_step": 1, "mlp_only_layers": []}


register_hf_family("qwen3_moe", ("Qwen3MoeForCausalLM",), Qwen3MoeConfig, Qwen3MoeForCausalLM, qwen3_moe_from_hf,
                   qwen3_moe_to_hf)
