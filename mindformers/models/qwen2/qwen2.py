"""Qwen2 / Qwen2.5 (Qwen team 2024): a Llama decoder whose q/k/v projections have biases.

Parameter names are Hugging Face's Qwen2ForCausalLM ones (`model.layers.N.self_attn.q_proj.bias`, ...).
"""
from mindformers.tools.register import MindFormerModuleType, MindFormerRegister

from ..decoder import DecoderForCausalLM
from ..llama import LlamaConfig, llama_layer


@MindFormerRegister.register(MindFormerModuleType.CONFIG)
class Qwen2Config(LlamaConfig):
    """LlamaConfig with Qwen2's defaults: qkv biases, RoPE base 1e6, RMSNorm eps 1e-6."""

    def __init__(self, qkv_has_bias: bool = True, theta: float = 1000000.0, rms_norm_eps: float = 1e-6,
                 vocab_size: int = 151936, **kwargs):
        super().__init__(qkv_has_bias=qkv_has_bias, theta=theta, rms_norm_eps=rms_norm_eps, vocab_size=vocab_size,
                         **kwargs)


@MindFormerRegister.register(MindFormerModuleType.MODELS)
class Qwen2ForCausalLM(DecoderForCausalLM):
    """Qwen2 with a language-model head: the Llama decoder (biases come from qkv_has_bias)."""

    config_class = Qwen2Config
    build_layer = staticmethod(llama_layer)
