"""Llama decoder (Touvron et al. 2023) on MindSpore: pre-norm blocks of GQA attention with RoPE and SwiGLU.

Parameter names match Hugging Face's LlamaForCausalLM one to one (`model.layers.0.self_attn.q_proj.weight`,
...), and weights are stored (out, in) like torch, so HF safetensors load without renaming or transposing.
"""
import os
from typing import Union

import mindspore as ms
from mindspore import nn, ops

from mindformers.modules import CausalSelfAttention, Embedding, Linear, RMSNorm, RotaryEmbedding, SwiGLU, \
    causal_mask
from mindformers.tools.register import MindFormerModuleType, MindFormerRegister

from ...checkpoint import load_weights
from ..base import DTYPES, causal_lm_loss, check_dtypes_on_device
from .llama_config import LlamaConfig

_DTYPE_KEYS = ("compute_dtype", "layernorm_compute_type", "softmax_compute_type", "rotary_dtype",
               "param_init_type", "embedding_init_type")


def build_attention(config: LlamaConfig, linear, q_norm=None, k_norm=None) -> CausalSelfAttention:
    """GQA attention with HF-named q/k/v/o projections made by `linear(n_in, n_out, bias)`."""
    c, hs = config.hidden_size, config.head_dim
    return CausalSelfAttention(
        config.num_heads, config.n_kv_heads, hs,
        q_proj=linear(c, config.num_heads * hs, config.qkv_has_bias),
        k_proj=linear(c, config.n_kv_heads * hs, config.qkv_has_bias),
        v_proj=linear(c, config.n_kv_heads * hs, config.qkv_has_bias),
        o_proj=linear(config.num_heads * hs, c),
        softmax_dtype=DTYPES[config.softmax_compute_type],
        use_flash_attention=config.use_flash_attention, q_norm=q_norm, k_norm=k_norm)


class LlamaDecoderLayer(nn.Cell):
    """x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        c, hs = config.hidden_size, config.head_dim
        param, norm_dtype = DTYPES[config.param_init_type], DTYPES[config.layernorm_compute_type]
        linear = self._linear_builder(config)
        # Qwen3-style qk-norm: an RMSNorm over each head of q and k (families set config.qk_norm).
        qk_norm = getattr(config, "qk_norm", False)
        self.input_layernorm = RMSNorm(c, config.rms_norm_eps, param, norm_dtype)
        self.self_attn = build_attention(
            config, linear, q_norm=RMSNorm(hs, config.rms_norm_eps, param, norm_dtype) if qk_norm else None,
            k_norm=RMSNorm(hs, config.rms_norm_eps, param, norm_dtype) if qk_norm else None)
        self.post_attention_layernorm = RMSNorm(c, config.rms_norm_eps, param, norm_dtype)
        self._build_feed_forward(config)

    @staticmethod
    def _linear_builder(config: LlamaConfig):
        param, compute = DTYPES[config.param_init_type], DTYPES[config.compute_dtype]

        def linear(n_in, n_out, bias=False):
            return Linear(n_in, n_out, bias, config.initializer_range, param, compute)
        return linear

    def _build_feed_forward(self, config: LlamaConfig):
        """Set `self.mlp`, the block after attention (MoE families override this)."""
        c, f, linear = config.hidden_size, config.ffn_hidden_size, self._linear_builder(config)
        self.mlp = SwiGLU(gate_proj=linear(c, f), up_proj=linear(c, f), down_proj=linear(f, c))

    def construct(self, x, cos, sin, mask, kv_cache=None, slot=None):
        if kv_cache is None:
            x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
            return x + self.mlp(self.post_attention_layernorm(x))
        y, kv_cache = self.self_attn(self.input_layernorm(x), cos, sin, mask, kv_cache, slot)
        x = x + y
        return x + self.mlp(self.post_attention_layernorm(x)), kv_cache


class LlamaModel(nn.Cell):
    """Token ids (B, T) -> final hidden states (B, T, C)."""

    layer_class = LlamaDecoderLayer  # families with another block subclass and set this

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.compute_dtype = DTYPES[config.compute_dtype]
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size, config.initializer_range,
                                      DTYPES[config.embedding_init_type])
        self.layers = nn.CellList([self.layer_class(config) for _ in range(config.num_layers)])
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, DTYPES[config.param_init_type],
                            DTYPES[config.layernorm_compute_type])
        self.rotary_emb = RotaryEmbedding(config.head_dim, config.max_position_embedding, config.theta,
                                          config.extend_method, config.scaling_factor, DTYPES[config.rotary_dtype])
        self.max_position = config.max_position_embedding

    def construct(self, input_ids, positions=None, mask=None, kv_caches=None, slot=None):
        """Hidden states (B, T, C); with `kv_caches` (a (k, v) pair per layer) also the updated caches.

        Training calls it with input_ids only (positions 0..T-1, causal mask). Generation passes positions
        (B, T) int (left-padded rows start later), a bool mask (B, T, S) and, to decode, a (1,) int32 cache `slot`
        (see CausalSelfAttention; the caches are Parameters written in place).
        """
        T = input_ids.shape[1]
        x = ops.cast(self.embed_tokens(input_ids), self.compute_dtype)  # (B, T, C)
        if positions is None:
            if T > self.max_position:
                raise ValueError(f"input has {T} tokens but model_config.max_position_embedding is "
                                 f"{self.max_position}; raise it or shorten the input")
            cos, sin = self.rotary_emb(T)  # (T, hs) each, shared by every layer
            mask = causal_mask(T)  # (T, T)
        else:
            cos = ops.gather(self.rotary_emb.cos, positions, 0).expand_dims(1)  # (B, 1, T, hs)
            sin = ops.gather(self.rotary_emb.sin, positions, 0).expand_dims(1)
        if kv_caches is None:
            for layer in self.layers:
                x = layer(x, cos, sin, mask)
            return self.norm(x)
        new_caches = ()
        for layer, kv_cache in zip(self.layers, kv_caches):
            x, kv_cache = layer(x, cos, sin, mask, kv_cache, slot)
            new_caches = new_caches + (kv_cache,)
        return self.norm(x), new_caches


def packed_positions_and_mask(position_ids):
    """(positions, mask) for packed sequences: position ids (B, T) that restart at 0 where a new document or
    sample begins, and the (B, T, T) bool mask that is causal within each such segment and False across them."""
    positions = ops.cast(position_ids, ms.int32)
    segment = ops.cumsum(ops.cast(positions == 0, ms.int32), 1)  # (B, T): segment number of each token
    same = segment.expand_dims(2) == segment.expand_dims(1)      # (B, T, T)
    return positions, ops.logical_and(same, causal_mask(positions.shape[1]).expand_dims(0))


def _recompute_layer_count(recompute_config, num_layers: int) -> int:
    """How many decoder layers recompute their activations in backward (upstream `recompute_config`)."""
    if recompute_config is None:
        return 0
    cfg = recompute_config if isinstance(recompute_config, dict) else vars(recompute_config)
    if cfg.get("select_recompute") not in (None, False, [], {}):
        raise ValueError("recompute_config.select_recompute (recomputing chosen ops) is not implemented; "
                         "set select_recompute: False and use recompute: True for whole layers")
    recompute = cfg.get("recompute", False)
    if isinstance(recompute, bool):
        return num_layers if recompute else 0
    # Upstream lists layers per pipeline stage; with one stage only the total matters.
    count = sum(recompute) if isinstance(recompute, (list, tuple)) else recompute
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"recompute_config.recompute must be a bool, a layer count or a list of counts, "
                         f"got {recompute!r}")
    return min(count, num_layers)


@MindFormerRegister.register(MindFormerModuleType.MODELS)
class LlamaForCausalLM(nn.Cell):
    """Llama with a language-model head.

    Training (`set_train(True)`): `construct(input_ids (B, S+1), labels=None)` predicts input_ids[:, 1:] (or
    labels[:, 1:] when given, for prompt masking) from input_ids[:, :-1] and returns the mean fp32
    cross-entropy over targets != ignore_token_id. Inference (`set_train(False)`, the state after
    construction): returns fp32 logits (B, T, vocab) for input_ids (B, T).
    """

    config_class = LlamaConfig  # families subclass and set these two
    model_class = LlamaModel

    def __init__(self, config: Union[LlamaConfig, dict]):
        super().__init__()
        if isinstance(config, dict):
            config = self.config_class(**config)
        check_dtypes_on_device(config, _DTYPE_KEYS, ms.get_context("device_target"))
        self.config = config
        self.ignore_index = config.ignore_token_id
        self.model = self.model_class(config)
        self.tie_word_embeddings = config.tie_word_embeddings
        if not config.tie_word_embeddings:
            self.lm_head = Linear(config.hidden_size, config.vocab_size, False, config.initializer_range,
                                  DTYPES[config.param_init_type], DTYPES[config.compute_dtype])
        self.head_matmul = ops.MatMul(transpose_b=True)
        # Index, don't slice: slicing a CellList builds a new one, which renames the parameters ("0.mlp...").
        for i in range(_recompute_layer_count(config.recompute_config, config.num_layers)):
            self.model.layers[i].recompute()
        if config.checkpoint_name_or_path:
            self._load_named_checkpoint(config.checkpoint_name_or_path)
        # A new Cell has training=False but compile phase 'train'; MindSpore caches graphs by phase, so a
        # later set_train(True) would reuse the inference graph. Aligning both here makes the switch recompile.
        self.set_train(False)

    def _load_named_checkpoint(self, path: str):
        if not os.path.exists(path):
            raise ValueError(f"model_config.checkpoint_name_or_path '{path}' is not a file or checkpoint directory; "
                             f"give one saved from this model (model names are not downloaded)")
        load_weights(self, path, key="model_config.checkpoint_name_or_path")

    def logits(self, input_ids):
        """fp32 logits (B, T, vocab) for input_ids (B, T)."""
        return self._head(self.model(input_ids))  # (B, T, vocab)

    def _head(self, h):
        """fp32 logits (B, T, vocab) from final hidden states (B, T, C)."""
        if self.tie_word_embeddings:
            B, T, C = h.shape
            w = ops.cast(self.model.embed_tokens.weight, h.dtype)
            return ops.cast(self.head_matmul(h.reshape(B * T, C), w), ms.float32).reshape(B, T, -1)
        return ops.cast(self.lm_head(h), ms.float32)

    def init_kv_caches(self, batch_size: int, cache_len: int) -> tuple:
        """Zeroed static KV cache: a (k, v) pair of (B, n_kv_heads, cache_len, head_dim) per layer (the
        generation runner holds them as Parameters, which prefill and decode write in place)."""
        c = self.config
        shape = (batch_size, c.n_kv_heads, cache_len, c.head_dim)
        dtype = DTYPES[c.compute_dtype]
        return tuple((ops.zeros(shape, dtype), ops.zeros(shape, dtype)) for _ in range(c.num_layers))

    def forward_positions(self, input_ids, positions, mask):
        """fp32 logits (B, T, vocab) for explicit positions (B, T) and bool mask (B, T, T), no cache."""
        return self._head(self.model(input_ids, positions, mask))

    def prefill(self, input_ids, positions, mask, kv_caches):
        """Run the prompt (B, P) into empty caches: last-position fp32 logits (B, vocab) and the caches."""
        h, kv_caches = self.model(input_ids, positions, mask, kv_caches)
        return self._head(h[:, -1:]).reshape(h.shape[0], -1), kv_caches

    def decode(self, input_ids, positions, mask, kv_caches, slot):
        """One token per row (B, 1) written at cache slot `slot` ((1,) int32): logits (B, vocab), caches."""
        h, kv_caches = self.model(input_ids, positions, mask, kv_caches, slot)
        # reshape, not [:, 0]: T is 1, and CPU StridedSlice took 1.9 ms on these logits (a tenth of the step)
        return self._head(h).reshape(h.shape[0], -1), kv_caches

    def construct(self, input_ids, labels=None, position_ids=None):
        """Training: `position_ids` (B, S+1), when given, restart at 0 at each packed document or sample; tokens
        then attend only within their own segment (see `packed_positions_and_mask`)."""
        if not self.training:
            return self.logits(input_ids)
        targets = input_ids[:, 1:] if labels is None else labels[:, 1:]
        if position_ids is None:
            return causal_lm_loss(self.logits(input_ids[:, :-1]), targets, self.ignore_index)
        positions, mask = packed_positions_and_mask(position_ids[:, :-1])
        logits = self._head(self.model(input_ids[:, :-1], positions, mask))
        return causal_lm_loss(logits, targets, self.ignore_index)

    def num_params(self, exclude_embeddings: bool = False) -> int:
        """Sum of parameter sizes; `exclude_embeddings` drops the input embedding table."""
        return sum(p.size for name, p in self.parameters_and_names()
                   if not (exclude_embeddings and name == "model.embed_tokens.weight"))

    def flops_per_token(self) -> int:
        """Training FLOPs per token at seq_length (see LlamaConfig.flops_per_token)."""
        return self.config.flops_per_token()
