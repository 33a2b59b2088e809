"""InternLM2 (Shanghai AI Lab 2024) as a research family: loaded with --register_path research/internlm2.

The architecture is the Llama decoder (RMSNorm, RoPE, GQA, SwiGLU); what differs is the checkpoint: one packed
`attention.wqkv` projection and its own tensor names. So the family is two registered classes and a pair of
weight converters for Hugging Face directories (model_type "internlm2", remote-code InternLM2ForCausalLM):

    model.tok_embeddings            <-> model.embed_tokens
    layers.N.attention.wqkv         <-> q_proj, k_proj, v_proj   (rows grouped per KV head: for each KV head,
                                                                  its query heads, then its key, then its value)
    layers.N.attention.wo           <-> self_attn.o_proj
    layers.N.feed_forward.w1/w3/w2  <-> mlp.gate_proj / up_proj / down_proj
    layers.N.attention_norm/ffn_norm <-> input_layernorm / post_attention_layernorm
    output                          <-> lm_head
"""
import re
from typing import Dict

import numpy as np

from mindformers.models import LlamaConfig, LlamaForCausalLM
from mindformers.models.hf.families import llama_from_hf, llama_to_hf, register_hf_family
from mindformers.tools.register import MindFormerModuleType, MindFormerRegister


@MindFormerRegister.register(MindFormerModuleType.CONFIG)
class InternLM2Config(LlamaConfig):
    """LlamaConfig with InternLM2's defaults (rope theta 1e6, vocab 92544, GQA 8 KV heads at 7B)."""

    def __init__(self, theta: float = 1000000.0, vocab_size: int = 92544, rms_norm_eps: float = 1e-5, **kwargs):
        super().__init__(theta=theta, vocab_size=vocab_size, rms_norm_eps=rms_norm_eps, **kwargs)


@MindFormerRegister.register(MindFormerModuleType.MODELS)
class InternLM2ForCausalLM(LlamaForCausalLM):
    """The Llama decoder under InternLM2's config; checkpoints convert on load and save (see the module doc)."""

    config_class = InternLM2Config


_RENAMES = [  # (InternLM2 pattern, ours), applied to the part after "model.layers.N."
    ("attention.wo.", "self_attn.o_proj."), ("feed_forward.w1.", "mlp.gate_proj."),
    ("feed_forward.w3.", "mlp.up_proj."), ("feed_forward.w2.", "mlp.down_proj."),
    ("attention_norm.", "input_layernorm."), ("ffn_norm.", "post_attention_layernorm.")]
_GLOBAL = {"model.tok_embeddings.weight": "model.embed_tokens.weight", "output.weight": "lm_head.weight",
           "model.norm.weight": "model.norm.weight"}
_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


def _split(config) -> tuple:
    groups = config.n_kv_heads
    per_group = config.num_heads // groups
    return groups, per_group, config.head_dim


def weights_from_internlm2(weights: Dict[str, np.ndarray], config) -> Dict[str, np.ndarray]:
    """InternLM2 tensors -> our Llama parameter names (wqkv unpacked)."""
    groups, per_group, head_dim = _split(config)
    out = {}
    for name, value in weights.items():
        if name in _GLOBAL:
            out[_GLOBAL[name]] = value
            continue
        match = _LAYER.match(name)
        if not match:
            out[name] = value  # left for the strict loader to report
            continue
        prefix, rest = f"model.layers.{match.group(1)}.", match.group(2)
        if rest == "attention.wqkv.weight":
            packed = value.reshape(groups, per_group + 2, head_dim, value.shape[-1])
            out[prefix + "self_attn.q_proj.weight"] = packed[:, :per_group].reshape(-1, value.shape[-1])
            out[prefix + "self_attn.k_proj.weight"] = packed[:, per_group].reshape(-1, value.shape[-1])
            out[prefix + "self_attn.v_proj.weight"] = packed[:, per_group + 1].reshape(-1, value.shape[-1])
            continue
        for theirs, ours in _RENAMES:
            if rest.startswith(theirs):
                rest = ours + rest[len(theirs):]
                break
        out[prefix + rest] = value
    return out


def weights_to_internlm2(weights: Dict[str, np.ndarray], config) -> Dict[str, np.ndarray]:
    """Our parameters -> InternLM2 tensors (q/k/v packed into wqkv)."""
    groups, per_group, head_dim = _split(config)
    reverse_global = {v: k for k, v in _GLOBAL.items()}
    out = {}
    for name, value in weights.items():
        if name in reverse_global:
            out[reverse_global[name]] = value
            continue
        match = _LAYER.match(name)
        prefix, rest = f"model.layers.{match.group(1)}.", match.group(2)
        if rest in ("self_attn.k_proj.weight", "self_attn.v_proj.weight"):
            continue  # packed with q below
        if rest == "self_attn.q_proj.weight":
            hidden = value.shape[-1]
            q = value.reshape(groups, per_group, head_dim, hidden)
            k = weights[prefix + "self_attn.k_proj.weight"].reshape(groups, 1, head_dim, hidden)
            v = weights[prefix + "self_attn.v_proj.weight"].reshape(groups, 1, head_dim, hidden)
            out[prefix + "attention.wqkv.weight"] = np.concatenate([q, k, v], 1).reshape(-1, hidden)
            continue
        for theirs, ours in _RENAMES:
            if rest.startswith(ours):
                rest = theirs + rest[len(ours):]
                break
        out[prefix + rest] = value
    return out


def config_from_internlm2(hf: dict) -> dict:
    if hf.get("bias"):
        raise ValueError("config.json bias: true (InternLM2 with projection biases) is not supported")
    return llama_from_hf({k: v for k, v in hf.items() if k != "bias"})


def config_to_internlm2(config) -> dict:
    return {**llama_to_hf(config), "bias": False, "auto_map": {
        "AutoConfig": "configuration_internlm2.InternLM2Config",
        "AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM"}}


register_hf_family("internlm2", ("InternLM2ForCausalLM",), InternLM2Config, InternLM2ForCausalLM,
                   config_from_internlm2, config_to_internlm2, weights_from_internlm2, weights_to_internlm2)
