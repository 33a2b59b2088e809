"""The decoder every family assembles from parts, as torchtune's component builders do.

A family is a function that builds its attention (projections, q/k norms, RoPE variant), its feed-forward
(SwiGLU, a fused SwiGLU, a MoE) and its norms, passes them into `DecoderLayer`, and its layers into `Decoder`
(`decoder_from_layers`). `DecoderForCausalLM` puts the language-model head on a family's decoder: the training
loss and the inference entry points of the `CausalLM` contract (models/base.py). A variant is another part
passed in, not a flag inside these classes.
"""
import os
from typing import Callable, Optional, Union

import mindspore as ms
from mindspore import nn, ops

from mindformers.modules import CausalSelfAttention, Embedding, Linear, RMSNorm, RotaryEmbedding, SwiGLU, \
    causal_mask

from ..checkpoint import load_weights
from ..tools.logger import log_once
from .base import DTYPES, BaseConfig, CausalLMLoss, check_dtypes_on_device

_DTYPE_KEYS = ("compute_dtype", "layernorm_compute_type", "softmax_compute_type", "rotary_dtype",
               "param_init_type", "embedding_init_type")


# ---- parts ----------------------------------------------------------------------------------------------------

def linear_factory(config) -> Callable[..., Linear]:
    """linear(n_in, n_out, bias=False) -> a Linear in the config's dtypes and init."""
    param, compute = DTYPES[config.param_init_type], DTYPES[config.compute_dtype]

    def linear(n_in: int, n_out: int, bias: bool = False) -> Linear:
        return Linear(n_in, n_out, bias, config.initializer_range, param, compute)
    return linear


def rms_norm(config, width: Optional[int] = None, eps: Optional[float] = None) -> RMSNorm:
    """RMSNorm over `width` (default hidden_size) in the config's dtypes."""
    return RMSNorm(width or config.hidden_size, config.rms_norm_eps if eps is None else eps,
                   DTYPES[config.param_init_type], DTYPES[config.layernorm_compute_type])


def gqa_attention(config, q_norm: Optional[nn.Cell] = None, k_norm: Optional[nn.Cell] = None) -> CausalSelfAttention:
    """GQA attention with HF-named q/k/v/o projections; `q_norm`/`k_norm` act on each head before RoPE."""
    c, hs, linear = config.hidden_size, config.head_dim, linear_factory(config)
    return CausalSelfAttention(
        config.num_heads, config.n_kv_heads, hs,
        q_proj=linear(c, config.num_heads * hs, config.qkv_has_bias),
        k_proj=linear(c, config.n_kv_heads * hs, config.qkv_has_bias),
        v_proj=linear(c, config.n_kv_heads * hs, config.qkv_has_bias),
        o_proj=linear(config.num_heads * hs, c),
        softmax_dtype=DTYPES[config.softmax_compute_type],
        use_flash_attention=config.layout["use_flash_attention"], q_norm=q_norm, k_norm=k_norm)


def swiglu(config, width: Optional[int] = None) -> SwiGLU:
    """down(silu(gate(x)) * up(x)) of `width` (default config.ffn_hidden_size)."""
    c, f, linear = config.hidden_size, width or config.ffn_hidden_size, linear_factory(config)
    return SwiGLU(gate_proj=linear(c, f), up_proj=linear(c, f), down_proj=linear(f, c))


def rotary_embedding(config, head_dim: Optional[int] = None) -> RotaryEmbedding:
    """RoPE cos/sin tables over `head_dim` (default config.head_dim) for max_position_embedding positions."""
    return RotaryEmbedding(head_dim or config.head_dim, config.max_position_embedding, config.theta,
                           config.extend_method, config.scaling_factor, DTYPES[config.rotary_dtype])


# ---- blocks ---------------------------------------------------------------------------------------------------

class DecoderLayer(nn.Cell):
    """x + attn(norm(x)), then x + ffn(norm(x)).

    The feed-forward is stored under `ffn_name`, its Hugging Face attribute (`mlp`, Mixtral's
    `block_sparse_moe`), so parameter names match HF checkpoints."""

    def __init__(self, input_layernorm: nn.Cell, self_attn: nn.Cell, post_attention_layernorm: nn.Cell,
                 ffn: nn.Cell, ffn_name: str = "mlp"):
        super().__init__()
        self.input_layernorm = input_layernorm
        self.self_attn = self_attn
        self.post_attention_layernorm = post_attention_layernorm
        setattr(self, ffn_name, ffn)
        self.ffn_name = ffn_name

    def construct(self, x, cos, sin, mask, kv_cache=None, slot=None):
        ffn = getattr(self, self.ffn_name)
        if kv_cache is None:
            x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
            return x + ffn(self.post_attention_layernorm(x))
        y, kv_cache = self.self_attn(self.input_layernorm(x), cos, sin, mask, kv_cache, slot)
        x = x + y
        return x + ffn(self.post_attention_layernorm(x)), kv_cache

    def with_aux_loss(self, x, cos, sin, mask):
        """Training block of a MoE layer: (x (B, T, C), the feed-forward's load-balancing loss)."""
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        y, aux = getattr(self, self.ffn_name).with_aux_loss(self.post_attention_layernorm(x))
        return x + y, aux


class Decoder(nn.Cell):
    """Token ids (B, T) -> final hidden states (B, T, C): embedding, layers, final norm; one RoPE table pair is
    shared by every layer."""

    def __init__(self, embed_tokens: Embedding, layers: nn.CellList, norm: nn.Cell, rotary_emb: nn.Cell,
                 compute_dtype, max_position: int):
        super().__init__()
        self.compute_dtype = compute_dtype
        self.embed_tokens = embed_tokens
        self.layers = layers
        self.norm = norm
        self.rotary_emb = rotary_emb
        self.max_position = max_position

    def _inputs(self, input_ids, positions, mask):
        """Embedded tokens and the (cos, sin, mask) every layer takes."""
        T = input_ids.shape[1]
        x = ops.cast(self.embed_tokens(input_ids), self.compute_dtype)  # (B, T, C)
        if positions is None:
            if T > self.max_position:
                raise ValueError(f"input has {T} tokens but model_config.max_position_embedding is "
                                 f"{self.max_position}; raise it or shorten the input")
            cos, sin = self.rotary_emb(T)  # (T, hs) each
            mask = causal_mask(T)  # (T, T)
        else:
            cos = ops.gather(self.rotary_emb.cos, positions, 0).expand_dims(1)  # (B, 1, T, hs)
            sin = ops.gather(self.rotary_emb.sin, positions, 0).expand_dims(1)
        return x, cos, sin, mask

    def construct(self, input_ids, positions=None, mask=None, kv_caches=None, slot=None):
        """Hidden states (B, T, C); with `kv_caches` (a (k, v) pair per layer) also the updated caches.

        Training calls it with input_ids only (positions 0..T-1, causal mask). Generation passes positions
        (B, T) int (left-padded rows start later), a bool mask (B, T, S) and, to decode, a (1,) int32 cache `slot`
        (see CausalSelfAttention; the caches are Parameters written in place).
        """
        x, cos, sin, mask = self._inputs(input_ids, positions, mask)
        if kv_caches is None:
            for layer in self.layers:
                x = layer(x, cos, sin, mask)
            return self.norm(x)
        new_caches = ()
        for layer, kv_cache in zip(self.layers, kv_caches):
            x, kv_cache = layer(x, cos, sin, mask, kv_cache, slot)
            new_caches = new_caches + (kv_cache,)
        return self.norm(x), new_caches

    def with_aux_loss(self, input_ids, positions=None, mask=None):
        """Training forward of a MoE decoder: (final hidden states, load-balancing loss averaged over layers)."""
        x, cos, sin, mask = self._inputs(input_ids, positions, mask)
        aux = 0.0
        for layer in self.layers:
            x, layer_aux = layer.with_aux_loss(x, cos, sin, mask)
            aux = aux + layer_aux
        return self.norm(x), aux / len(self.layers)


def decoder_from_layers(config, make_layer: Callable[[object, int], nn.Cell],
                        rotary_emb: Optional[nn.Cell] = None) -> Decoder:
    """A Decoder of `make_layer(config, index)` for each layer, with the config's embedding, final norm and
    (unless a family passes its own) RoPE over head_dim."""
    embed = Embedding(config.vocab_size, config.hidden_size, config.initializer_range,
                      DTYPES[config.embedding_init_type])
    layers = nn.CellList([make_layer(config, i) for i in range(config.num_layers)])
    return Decoder(embed, layers, rms_norm(config), rotary_emb or rotary_embedding(config),
                   DTYPES[config.compute_dtype], config.max_position_embedding)


def packed_positions_and_mask(position_ids):
    """(positions, mask) for packed sequences: position ids (B, T) that restart at 0 where a new document or
    sample begins, and the (B, T, T) bool mask that is causal within each such segment and False across them."""
    positions = ops.cast(position_ids, ms.int32)
    segment = ops.cumsum(ops.cast(positions == 0, ms.int32), 1)  # (B, T): segment number of each token
    same = segment.expand_dims(2) == segment.expand_dims(1)      # (B, T, T)
    return positions, ops.logical_and(same, causal_mask(positions.shape[1]).expand_dims(0))


def recompute_saves_memory() -> bool:
    """Whether recomputing layers saves memory on this device: on CPU MindSpore 2.10 keeps it from doing so
    (measured in docs/performance.md), so there it is skipped rather than paid for in speed and memory."""
    return ms.get_context("device_target") != "CPU"


def recompute_layer_count(recompute_config, num_layers: int) -> int:
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


# ---- the language model -----------------------------------------------------------------------------------------

class DecoderForCausalLM(nn.Cell):
    """A family's decoder with a language-model head; families set `config_class` and `build_layer` (one
    decoder block from the config and its index), or `build_decoder` when the embedding or RoPE differ.

    Training (`set_train(True)`): `construct(input_ids (B, S+1), labels=None)` predicts input_ids[:, 1:] (or
    labels[:, 1:] when given, for prompt masking) from input_ids[:, :-1] and returns the mean fp32
    cross-entropy over targets != ignore_token_id. Inference (`set_train(False)`, the state after
    construction): returns fp32 logits (B, T, vocab) for input_ids (B, T).
    """

    config_class = BaseConfig
    build_layer: Callable[[object, int], nn.Cell]

    @classmethod
    def build_decoder(cls, config) -> Decoder:
        """Embedding, num_layers `build_layer` blocks, final RMSNorm, RoPE over head_dim."""
        return decoder_from_layers(config, cls.build_layer)

    def __init__(self, config: Union[BaseConfig, dict]):
        super().__init__()
        if isinstance(config, dict):
            config = self.config_class(**config)
        check_dtypes_on_device(config, _DTYPE_KEYS, ms.get_context("device_target"))
        self.config = config
        self.ignore_index = config.ignore_token_id
        self.lm_loss = CausalLMLoss(self.ignore_index)  # a cell: tensor parallel swaps in a vocabulary-parallel one
        self.model = type(self).build_decoder(config)
        self.tie_word_embeddings = config.tie_word_embeddings
        if not config.tie_word_embeddings:
            self.lm_head = linear_factory(config)(config.hidden_size, config.vocab_size)
        self.head_matmul = ops.MatMul(transpose_b=True)
        self.apply_recompute(config.parallel["recompute_config"])
        if config.weights["checkpoint_name_or_path"]:
            self._load_named_checkpoint(config.weights["checkpoint_name_or_path"])
        # A new Cell has training=False but compile phase 'train'; MindSpore caches graphs by phase, so a
        # later set_train(True) would reuse the inference graph. Aligning both here makes the switch recompile.
        self.set_train(False)

    def apply_recompute(self, recompute_config, on_cpu_too: bool = False) -> int:
        """Make the first N decoder layers recompute their activations in backward (upstream recompute_config);
        returns N. Skipped (and logged once) where it saves no memory, unless `on_cpu_too`."""
        count = recompute_layer_count(recompute_config, self.config.num_layers)
        if count and not (on_cpu_too or recompute_saves_memory()):
            log_once("recompute on CPU", "recompute_config.recompute: has no effect on CPU (MindSpore's CPU backend "
                     "saves no memory by recomputing layers, it only slows the step; docs/performance.md)")
            return 0
        # Index, don't slice: slicing a CellList builds a new one, which renames the parameters ("0.mlp...").
        for i in range(count):
            self.model.layers[i].recompute()
        return count

    def _load_named_checkpoint(self, path: str):
        if not os.path.exists(path):
            raise ValueError(f"model_config.checkpoint_name_or_path '{path}' is not a file or checkpoint directory; "
                             f"give one saved from this model (model names are not downloaded)")
        load_weights(self, path, key="model_config.checkpoint_name_or_path")

    def logits(self, input_ids):
        """fp32 logits (B, T, vocab) for input_ids (B, T)."""
        return self.head(self.model(input_ids))  # (B, T, vocab)

    def head(self, h):
        """fp32 logits (B, T, vocab) from final hidden states (B, T, C)."""
        if self.tie_word_embeddings:
            B, T, C = h.shape
            w = ops.cast(self.model.embed_tokens.weight, h.dtype)
            return ops.cast(self.head_matmul(h.reshape(B * T, C), w), ms.float32).reshape(B, T, -1)
        return ops.cast(self.lm_head(h), ms.float32)

    def logits_at(self, input_ids, index):
        """fp32 logits (B, K, vocab) at positions `index` (B, K) of each row of input_ids (B, T): the head runs on
        the K scored positions only, not all T."""
        B, T = input_ids.shape
        flat = index + ops.arange(B, dtype=index.dtype).reshape(B, 1) * T  # rows of the (B*T, C) hidden states
        return self.head(ops.gather(self.model(input_ids).reshape(B * T, -1), flat, 0))

    def init_kv_caches(self, batch_size: int, cache_len: int) -> tuple:
        """Zeroed static KV cache: a (k, v) pair of (B, n_kv_heads, cache_len, head_dim) per layer (the
        generation runner holds them as Parameters, which prefill and decode write in place)."""
        c = self.config
        shape = (batch_size, c.n_kv_heads, cache_len, c.head_dim)
        dtype = DTYPES[c.compute_dtype]
        return tuple((ops.zeros(shape, dtype), ops.zeros(shape, dtype)) for _ in range(c.num_layers))

    def forward_positions(self, input_ids, positions, mask):
        """fp32 logits (B, T, vocab) for explicit positions (B, T) and bool mask (B, T, T), no cache."""
        return self.head(self.model(input_ids, positions, mask))

    def prefill(self, input_ids, positions, mask, kv_caches):
        """Run the prompt (B, P) into empty caches: last-position fp32 logits (B, vocab) and the caches."""
        h, kv_caches = self.model(input_ids, positions, mask, kv_caches)
        return self.head(h[:, -1:]).reshape(h.shape[0], -1), kv_caches

    def decode(self, input_ids, positions, mask, kv_caches, slot):
        """One token per row (B, 1) written at cache slot `slot` ((1,) int32): logits (B, vocab), caches."""
        h, kv_caches = self.model(input_ids, positions, mask, kv_caches, slot)
        # reshape, not [:, 0]: T is 1 and a strided slice of the logits costs a kernel (docs/performance.md)
        return self.head(h).reshape(h.shape[0], -1), kv_caches

    def construct(self, input_ids, labels=None, position_ids=None):
        """Training: `position_ids` (B, S+1), when given, restart at 0 at each packed document or sample; tokens
        then attend only within their own segment (see `packed_positions_and_mask`)."""
        if not self.training:
            return self.logits(input_ids)
        targets = input_ids[:, 1:] if labels is None else labels[:, 1:]
        if position_ids is None:
            return self.lm_loss(self.logits(input_ids[:, :-1]), targets)
        positions, mask = packed_positions_and_mask(position_ids[:, :-1])
        logits = self.head(self.model(input_ids[:, :-1], positions, mask))
        return self.lm_loss(logits, targets)

    def num_params(self, exclude_embeddings: bool = False) -> int:
        """Sum of parameter sizes; `exclude_embeddings` drops the input embedding table."""
        return sum(p.size for name, p in self.parameters_and_names()
                   if not (exclude_embeddings and name == "model.embed_tokens.weight"))

    def flops_per_token(self) -> int:
        """Training FLOPs per token at seq_length (see the config's flops_per_token)."""
        return self.config.flops_per_token()


class MoeForCausalLM(DecoderForCausalLM):
    """A decoder of MoE layers with a language-model head; the training loss adds router_aux_loss_coef x the
    load-balancing loss."""

    def __init__(self, config):
        super().__init__(config)
        self.aux_loss_coef = float(self.config.router_aux_loss_coef)

    def apply_recompute(self, recompute_config, on_cpu_too: bool = False) -> int:
        if recompute_layer_count(recompute_config, self.config.num_layers):
            # Training runs Decoder.with_aux_loss, not the layers' construct that recompute() wraps.
            raise ValueError("recompute_config.recompute is not implemented for MoE models; set recompute: False")
        return 0

    def construct(self, input_ids, labels=None, position_ids=None):
        if not self.training:
            return self.logits(input_ids)
        targets = input_ids[:, 1:] if labels is None else labels[:, 1:]
        if position_ids is None:
            h, aux = self.model.with_aux_loss(input_ids[:, :-1])
        else:
            h, aux = self.model.with_aux_loss(input_ids[:, :-1], *packed_positions_and_mask(position_ids[:, :-1]))
        return self.lm_loss(self.head(h), targets) + self.aux_loss_coef * aux
