"""Llama decoder (Touvron et al. 2023) on MindSpore: pre-norm blocks of GQA attention with RoPE and SwiGLU.

Parameter names match Hugging Face's LlamaForCausalLM one to one (`model.layers.0.self_attn.q_proj.weight`,
...), and weights are stored (out, in) like torch, so HF safetensors load without renaming or transposing.
"""
from mindformers.tools.register import MindFormerModuleType, MindFormerRegister

from ..decoder import DecoderForCausalLM, DecoderLayer, gqa_attention, rms_norm, swiglu
from .llama_config import LlamaConfig


def llama_layer(config: LlamaConfig, index: int) -> DecoderLayer:
    """One Llama block: RMSNorm, GQA attention (q/k/v biases if qkv_has_bias), RMSNorm, SwiGLU."""
    return DecoderLayer(rms_norm(config), gqa_attention(config), rms_norm(config), swiglu(config))


@MindFormerRegister.register(MindFormerModuleType.MODELS)
class LlamaForCausalLM(DecoderForCausalLM):
    """Llama with a language-model head (interface: DecoderForCausalLM, the CausalLM contract)."""

    config_class = LlamaConfig
    build_layer = staticmethod(llama_layer)
