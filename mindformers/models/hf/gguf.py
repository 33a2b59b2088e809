"""Import llama.cpp GGUF files (Llama and Qwen2 architectures) as our models, dequantized to float32.

Needs the optional `gguf` package (pip install 'mindformers[gguf]'). llama.cpp's converter permutes the rows
of Llama's q/k projections from HF's half-split RoPE layout to an interleaved one; we undo that. Qwen2 uses
the half-split ("NEOX") layout in llama.cpp and is stored unpermuted.
"""
import os
import re
from typing import Dict, Tuple

import numpy as np

from ...modules.rotary import ROPE_SCALING
from ...tokenization.gguf import gguf_module
from .families import HF_FAMILIES
from .loading import load_state_dict, with_overrides

# general.architecture -> (config class, model class, q/k rows permuted by the converter)
# GGUF architecture -> whether llama.cpp permuted its q/k rows (the family is the HF model_type of the same name)
_ARCHS = {"llama": True, "qwen2": False}

_GLOBAL_NAMES = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
                 "output.weight": "lm_head.weight"}
_LAYER_NAMES = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
                "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
                "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                "ffn_down": "mlp.down_proj"}
_LAYER_RE = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)$")


def _metadata(reader) -> Dict[str, object]:
    out = {}
    for name, field in reader.fields.items():
        if name.startswith("tokenizer.ggml.") and name not in ("tokenizer.ggml.bos_token_id",
                                                              "tokenizer.ggml.eos_token_id",
                                                              "tokenizer.ggml.padding_token_id"):
            continue  # vocabularies are large and not needed for the model
        out[name] = field.contents()
    return out


def _config_kwargs(meta: dict, path: str, vocab_size: int) -> dict:
    arch = meta.get("general.architecture")

    def get(key, default=None):
        value = meta.get(f"{arch}.{key}", default)
        if value is None:
            raise ValueError(f"{path}: GGUF metadata {arch}.{key} is missing")
        return value

    heads = int(get("attention.head_count"))
    context = int(get("context_length"))
    kwargs = {"hidden_size": int(get("embedding_length")), "intermediate_size": int(get("feed_forward_length")),
              "num_layers": int(get("block_count")), "num_heads": heads,
              "n_kv_heads": int(get("attention.head_count_kv", heads)), "vocab_size": vocab_size,
              "max_position_embedding": context, "seq_length": context,
              "rms_norm_eps": float(get("attention.layer_norm_rms_epsilon")),
              "theta": float(get("rope.freq_base", 10000.0))}
    head_dim = kwargs["hidden_size"] // heads
    rope_dims = meta.get(f"{arch}.rope.dimension_count", head_dim)
    if int(rope_dims) != head_dim:
        raise ValueError(f"{path}: {arch}.rope.dimension_count={rope_dims} (partial rotary) is not supported; "
                         f"the decoder rotates the whole head of {head_dim}")
    for ours, key in (("bos_token_id", "tokenizer.ggml.bos_token_id"), ("eos_token_id", "tokenizer.ggml.eos_token_id"),
                      ("pad_token_id", "tokenizer.ggml.padding_token_id")):
        if key in meta:
            kwargs[ours] = int(meta[key])
    return kwargs


def _rope_scaling(meta: dict, path: str, theta: float, head_dim: int, rope_freqs):
    """The HF-style rope_scaling dict of a GGUF file (None: plain RoPE).

    llama.cpp writes linear and YaRN scaling as `<arch>.rope.scaling.*` keys, but Llama 3.1's scaling as a
    `rope_freqs` tensor of per-frequency divisors. Those divisors are found again from the llama3 parameters
    every Llama 3.x release uses (low/high frequency factors 1 and 4, original context 8192) and checked
    against the tensor, so other divisors are an error rather than silently different positions.
    """
    arch = meta.get("general.architecture")
    kind = str(meta.get(f"{arch}.rope.scaling.type", "none"))
    factor = meta.get(f"{arch}.rope.scaling.factor")
    original = meta.get(f"{arch}.rope.scaling.original_context_length")
    if kind != "none" and rope_freqs is not None:
        raise ValueError(f"{path}: both {arch}.rope.scaling.type={kind!r} and a rope_freqs tensor; cannot tell "
                         f"which scaling to apply")
    if kind == "linear":
        return {"rope_type": "linear", "factor": float(factor)}
    if kind == "yarn":
        if original is None:
            raise ValueError(f"{path}: YaRN scaling needs {arch}.rope.scaling.original_context_length")
        if meta.get(f"{arch}.rope.scaling.yarn_log_multiplier") not in (None, 0.1):
            raise ValueError(f"{path}: {arch}.rope.scaling.yarn_log_multiplier other than 0.1 is not supported")
        return {"rope_type": "yarn", "factor": float(factor), "original_max_position_embeddings": int(original)}
    if kind != "none":
        raise ValueError(f"{path}: {arch}.rope.scaling.type={kind!r} is not supported; valid: none, linear, yarn "
                         f"(or a rope_freqs tensor in Llama 3.1 form)")
    if rope_freqs is None:
        return None
    divisors = np.asarray(rope_freqs, np.float64).reshape(-1)
    params = {"rope_type": "llama3", "factor": float(divisors.max()), "low_freq_factor": 1.0,
              "high_freq_factor": 4.0, "original_max_position_embeddings": int(original or 8192)}
    plain, _ = ROPE_SCALING["default"](head_dim, theta, 2, 1.0)
    scaled, _ = ROPE_SCALING["llama3"](head_dim, theta, 2, {k: v for k, v in params.items() if k != "rope_type"})
    if divisors.shape != (head_dim // 2,) or not np.allclose(plain[1] / scaled[1], divisors, rtol=1e-4):
        raise ValueError(f"{path}: the rope_freqs tensor does not match Llama 3.1 scaling with factor "
                         f"{params['factor']:g}, low/high frequency factors 1/4 and original context "
                         f"{params['original_max_position_embeddings']}; load the Hugging Face directory instead")
    return params


def _unpermute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's per-head interleave of RoPE rows: rows (h, half, 2) back to (h, 2, half)."""
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tensor(gguf, tensor) -> np.ndarray:
    """A tensor as float32 in numpy (row-major, torch-like) shape."""
    shape = tuple(int(d) for d in reversed(tensor.shape))  # GGUF lists dims innermost first
    qtype = gguf.GGMLQuantizationType(int(tensor.tensor_type))
    if qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
        data = np.asarray(tensor.data, dtype=np.float32)
    else:
        data = gguf.quants.dequantize(np.asarray(tensor.data), qtype)
    return np.ascontiguousarray(data, dtype=np.float32).reshape(shape)


def read_gguf(path: str) -> Tuple[object, Dict[str, np.ndarray], type]:
    """(our config, HF-named float32 weights, our model class) for a Llama/Qwen2 GGUF file."""
    gguf = gguf_module()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"GGUF file {path} not found")
    reader = gguf.GGUFReader(path)
    meta = _metadata(reader)
    arch = meta.get("general.architecture")
    if arch not in _ARCHS:
        raise ValueError(f"{path}: general.architecture {arch!r} is not supported; supported: {', '.join(_ARCHS)}")
    permuted, family = _ARCHS[arch], HF_FAMILIES[arch]
    config_class, model_class = family.config_class, family.model_class
    raw = {t.name: t for t in reader.tensors}
    if "token_embd.weight" not in raw:
        raise ValueError(f"{path}: no token_embd.weight tensor")
    kwargs = _config_kwargs(meta, path, int(raw["token_embd.weight"].shape[1]))
    kwargs["tie_word_embeddings"] = "output.weight" not in raw
    rope_freqs = _tensor(gguf, raw.pop("rope_freqs.weight")) if "rope_freqs.weight" in raw else None
    kwargs["rope_scaling"] = _rope_scaling(meta, path, kwargs["theta"], kwargs["hidden_size"] // kwargs["num_heads"],
                                           rope_freqs)
    config = config_class(**kwargs)
    weights = {}
    for name, tensor in raw.items():
        match = _LAYER_RE.match(name)
        if name in _GLOBAL_NAMES:
            ours = _GLOBAL_NAMES[name]
        elif match and match.group(2) in _LAYER_NAMES:
            ours = f"model.layers.{match.group(1)}.{_LAYER_NAMES[match.group(2)]}.{match.group(3)}"
        else:
            raise ValueError(f"{path}: tensor {name} has no counterpart in {model_class.__name__}")
        value = _tensor(gguf, tensor)
        if permuted and match and match.group(2) in ("attn_q", "attn_k"):
            value = _unpermute(value, config.num_heads if match.group(2) == "attn_q" else config.n_kv_heads)
        weights[ours] = value
    return config, weights, model_class


def load_gguf(path: str, **overrides):
    """Our model from a GGUF file; `overrides` are model_config keys (e.g. seq_length, use_past)."""
    config, weights, model_class = read_gguf(path)
    config = with_overrides(config, overrides, path)
    network = model_class(config)
    load_state_dict(network, weights, f"GGUF file {path}")
    return network
