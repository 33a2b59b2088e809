"""GLM-4 (Zhipu AI / THUDM 2025, e.g. GLM-4-9B-0414): the Llama decoder with three changes.

- Sandwich norms: each block normalizes its sublayer's output too (post_self_attn_layernorm after attention,
  post_mlp_layernorm after the MLP) before the residual add.
- Partial, interleaved RoPE: only the first `partial_rotary_factor` of each head's dims rotate, in adjacent
  pairs (0, 1), (2, 3), ... (GPT-J style), not the half-split pairs of Llama.
- One fused `mlp.gate_up_proj` (gate rows first, then up) instead of gate_proj and up_proj.

q/k/v have biases (`attention_bias`), o_proj has none, and head_dim is explicit (128 at 9B). Parameter names
and layouts are Hugging Face's Glm4ForCausalLM ones, so its safetensors load as they are.
"""
import numbers
from typing import Optional

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops

from mindformers.modules import rope_tables
from mindformers.tools.register import MindFormerModuleType, MindFormerRegister

from ..base import DTYPES
from ..decoder import DecoderForCausalLM, DecoderLayer, decoder_from_layers, gqa_attention, linear_factory, rms_norm
from ..llama import LlamaConfig


@MindFormerRegister.register(MindFormerModuleType.CONFIG)
class Glm4Config(LlamaConfig):
    """LlamaConfig plus `partial_rotary_factor`, with GLM-4-9B-0414's defaults (head_dim is explicit there)."""

    def __init__(self, partial_rotary_factor: float = 0.5,
                 qkv_has_bias: bool = True, vocab_size: int = 151552, bos_token_id: Optional[int] = None,
                 eos_token_id: int = 151329, pad_token_id: int = 151329, **kwargs):
        super().__init__(qkv_has_bias=qkv_has_bias, vocab_size=vocab_size, bos_token_id=bos_token_id,
                         eos_token_id=eos_token_id, pad_token_id=pad_token_id, **kwargs)
        if isinstance(partial_rotary_factor, bool) or not isinstance(partial_rotary_factor, numbers.Real) \
                or not 0 < partial_rotary_factor <= 1:
            raise ValueError(f"model_config.partial_rotary_factor must be in (0, 1], got {partial_rotary_factor!r}")
        # Hugging Face truncates head_dim * factor; the rotated dims pair up, so their count must be even.
        rotary_dim = int(self.head_dim * partial_rotary_factor)
        if rotary_dim % 2 or not rotary_dim:
            raise ValueError(f"model_config.partial_rotary_factor={partial_rotary_factor} rotates {rotary_dim} of "
                             f"head_dim {self.head_dim} dims; that must be a positive even number")
        self.partial_rotary_factor = partial_rotary_factor
        rope_tables(self.rotary_dim, 1, self.theta, self.extend_method, self.scaling_factor)

    @property
    def rotary_dim(self) -> int:
        """How many leading dims of each head RoPE rotates."""
        return int(self.head_dim * self.partial_rotary_factor)

    def num_params(self, exclude_embeddings: bool = False) -> int:
        """LlamaConfig's count (the fused gate_up has gate + up's size) plus the two extra norms per layer."""
        return super().num_params(exclude_embeddings) + self.num_layers * 2 * self.hidden_size


def interleaved_rope_order(head_dim: int, rotary_dim: int) -> np.ndarray:
    """Head-dim order that turns GLM's rotary pairs (2j, 2j+1), j < rotary_dim/2, into the half-split pairs
    (j, j + head_dim/2) that `apply_rotary` rotates; the dims that do not rotate fill the remaining slots."""
    pairs, half = rotary_dim // 2, head_dim // 2
    rest = np.arange(rotary_dim, head_dim)
    split = half - pairs
    return np.concatenate([np.arange(0, rotary_dim, 2), rest[:split], np.arange(1, rotary_dim, 2), rest[split:]])


def partial_rope_tables(head_dim: int, rotary_dim: int, max_position: int, theta: float, extend_method="None",
                        scaling_factor=1.0):
    """cos, sin (max_position, head_dim) for heads in `interleaved_rope_order`: the rotary_dim/2 frequencies
    of a rotary_dim-wide RoPE on the first slots of each half, cos 1 and sin 0 (no rotation) elsewhere."""
    cos, sin = rope_tables(rotary_dim, max_position, theta, extend_method, scaling_factor)
    pairs, half = rotary_dim // 2, head_dim // 2
    ones, zeros = np.ones((max_position, half - pairs)), np.zeros((max_position, half - pairs))
    cos_half = np.concatenate([cos[:, :pairs], ones], -1)
    sin_half = np.concatenate([sin[:, :pairs], zeros], -1)
    return np.concatenate([cos_half, cos_half], -1), np.concatenate([sin_half, sin_half], -1)


class ReorderHeadDims(nn.Cell):
    """Permutes the last axis (head dims) of q or k into `interleaved_rope_order`.

    CausalSelfAttention applies its q_norm/k_norm cells to each head right before RoPE; GLM-4 plugs this in
    there so the shared half-split RoPE does GLM's interleaved partial rotation. q and k get the same order,
    so q.k (and the attention output, which v alone carries) is unchanged.
    """

    def __init__(self, head_dim: int, rotary_dim: int):
        super().__init__()
        self.order = Tensor(interleaved_rope_order(head_dim, rotary_dim), ms.int32)

    def construct(self, x):
        return ops.gather(x, self.order, x.ndim - 1)


class PartialRotaryEmbedding(nn.Cell):
    """RotaryEmbedding's interface (cos, sin attributes; `construct(T)`) over `partial_rope_tables`."""

    def __init__(self, config: Glm4Config):
        super().__init__()
        cos, sin = partial_rope_tables(config.head_dim, config.rotary_dim, config.max_position_embedding,
                                       config.theta, config.extend_method, config.scaling_factor)
        dtype = DTYPES[config.rotary_dtype]
        self.cos = Tensor(cos.astype(np.float32), dtype)
        self.sin = Tensor(sin.astype(np.float32), dtype)

    def construct(self, seq_len: int):
        return self.cos[:seq_len], self.sin[:seq_len]


class Glm4MLP(nn.Cell):
    """down(silu(gate) * up) with gate and up from one fused projection (gate rows first, as HF chunks it)."""

    def __init__(self, gate_up_proj: nn.Cell, down_proj: nn.Cell, ffn_hidden_size: int):
        super().__init__()
        self.gate_up_proj = gate_up_proj
        self.down_proj = down_proj
        self.ffn_hidden_size = ffn_hidden_size

    def construct(self, x):
        gate_up = self.gate_up_proj(x)  # (B, T, 2F)
        f = self.ffn_hidden_size
        return self.down_proj(ops.silu(gate_up[..., :f]) * gate_up[..., f:])


class Glm4DecoderLayer(DecoderLayer):
    """x + norm(attn(norm(x))), then x + norm(mlp(norm(x))): the Llama block plus a norm after each sublayer."""

    def __init__(self, input_layernorm: nn.Cell, self_attn: nn.Cell, post_self_attn_layernorm: nn.Cell,
                 post_attention_layernorm: nn.Cell, mlp: nn.Cell, post_mlp_layernorm: nn.Cell):
        super().__init__(input_layernorm, self_attn, post_attention_layernorm, mlp)
        self.post_self_attn_layernorm = post_self_attn_layernorm
        self.post_mlp_layernorm = post_mlp_layernorm

    def construct(self, x, cos, sin, mask, kv_cache=None, slot=None):
        h = self.input_layernorm(x)
        if kv_cache is None:
            y = self.self_attn(h, cos, sin, mask)
        else:
            y, kv_cache = self.self_attn(h, cos, sin, mask, kv_cache, slot)
        x = x + self.post_self_attn_layernorm(y)
        x = x + self.post_mlp_layernorm(self.mlp(self.post_attention_layernorm(x)))
        return x if kv_cache is None else (x, kv_cache)


def glm4_layer(config: Glm4Config, index: int) -> Glm4DecoderLayer:
    """One GLM-4 block: attention whose q/k heads are reordered for the interleaved partial RoPE, a fused
    gate_up SwiGLU, and a norm after each sublayer."""
    c, hs, f, linear = config.hidden_size, config.head_dim, config.ffn_hidden_size, linear_factory(config)
    return Glm4DecoderLayer(
        rms_norm(config),
        gqa_attention(config, q_norm=ReorderHeadDims(hs, config.rotary_dim),
                      k_norm=ReorderHeadDims(hs, config.rotary_dim)),
        rms_norm(config), rms_norm(config), Glm4MLP(linear(c, 2 * f), linear(f, c), f), rms_norm(config))


def glm4_decoder(config: Glm4Config):
    """Embedding, num_layers GLM-4 blocks, final RMSNorm, the partial interleaved RoPE tables."""
    return decoder_from_layers(config, glm4_layer, PartialRotaryEmbedding(config))


@MindFormerRegister.register(MindFormerModuleType.MODELS)
class Glm4ForCausalLM(DecoderForCausalLM):
    """GLM-4 with a language-model head (interface: DecoderForCausalLM)."""

    config_class = Glm4Config
    build_decoder = staticmethod(glm4_decoder)
