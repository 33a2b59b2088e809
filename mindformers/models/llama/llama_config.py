"""LlamaConfig: the `model.model_config` section of a Llama YAML (upstream key names and defaults)."""
import numbers
from typing import Optional, Union

from mindformers.modules import check_extend_method, from_rope_scaling, llama_ffn_hidden_size, rope_tables
from mindformers.pet import LoraConfig
from mindformers.tools.logger import log_once
from mindformers.tools.register import MindFormerModuleType, MindFormerRegister

from ..base import BaseConfig, boolean, check_dtype, positive_int, positive_number


# Non-default values of these keys select features this project does not have: each fails loudly.
_UNSUPPORTED = {
    "pp_interleave_num": (1, "pipeline interleaving is not implemented; set pp_interleave_num: 1"),
}
# Ascend speed and memory layouts that compute the same model: a non-default value is logged once.
_NO_EFFECT = {
    "is_dynamic": (False, "generation compiles one graph per (batch, length) shape and keeps the last few"),
    "block_size": (16, "the KV cache is a static (batch, max length) buffer, not paged blocks"),
    "num_blocks": (512, "the KV cache is a static (batch, max length) buffer, not paged blocks"),
    "qkv_concat": (False, "q/k/v stay separate projections as in Hugging Face checkpoints; a fused qkv matmul "
                          "computes the same outputs"),
    "fine_grain_interleave": (1, "fine-grained interleaving only overlaps model-parallel communication"),
}

# Keys upstream keeps in model_config that are not the architecture, by the section of the built config that
# holds them: `generation` (defaults for generate), `parallel` (read by the trainer and the model build),
# `weights` (what to load or adapt after the build) and `layout` (device layouts that compute the same model).
SECTION_KEYS = {
    "generation": ("use_past", "do_sample", "top_k", "top_p", "repetition_penalty", "max_decode_length"),
    "parallel": ("parallel_config", "recompute_config", "offset", "pp_interleave_num"),
    "weights": ("checkpoint_name_or_path", "pet_config"),
    "layout": ("batch_size", "is_dynamic", "block_size", "num_blocks", "qkv_concat", "fine_grain_interleave",
               "use_rope_slice", "use_flash_attention"),
}


@MindFormerRegister.register(MindFormerModuleType.CONFIG)
class LlamaConfig(BaseConfig):
    """Size and numerics of a Llama decoder; the constructor takes upstream's whole `model_config` section and
    files the keys that are not the architecture under `generation`, `parallel`, `weights` and `layout`.

    Defaults follow upstream except the dtypes, which default to float32 because this project runs on CPU
    first; Ascend YAMLs set float16/bfloat16 explicitly.
    """

    SECTIONS = {key: section for section, keys in SECTION_KEYS.items() for key in keys}

    def __init__(self,
                 batch_size: int = 1,
                 seq_length: int = 2048,
                 hidden_size: int = 4096,
                 num_layers: int = 32,
                 num_heads: int = 32,
                 n_kv_heads: Optional[int] = None,
                 head_dim: Optional[int] = None,
                 max_position_embedding: Optional[int] = None,
                 intermediate_size: Optional[int] = None,
                 vocab_size: int = 32000,
                 multiple_of: int = 256,
                 ffn_dim_multiplier: Optional[float] = None,
                 rms_norm_eps: float = 1e-5,
                 bos_token_id: int = 1,
                 eos_token_id: int = 2,
                 pad_token_id: int = 0,
                 ignore_token_id: int = -100,
                 theta: float = 10000.0,
                 compute_dtype: str = "float32",
                 layernorm_compute_type: str = "float32",
                 softmax_compute_type: str = "float32",
                 rotary_dtype: str = "float32",
                 param_init_type: str = "float32",
                 embedding_init_type: Optional[str] = None,
                 qkv_has_bias: bool = False,
                 qkv_concat: bool = False,
                 parallel_config: Optional[Union[dict, object]] = None,
                 recompute_config: Optional[Union[dict, object]] = None,
                 pet_config: Optional[dict] = None,
                 use_past: bool = False,
                 extend_method: Optional[str] = "None",
                 scaling_factor: Union[float, dict] = 1.0,
                 rope_scaling: Optional[dict] = None,
                 is_dynamic: bool = False,
                 use_rope_slice: bool = False,
                 use_flash_attention: bool = False,
                 fine_grain_interleave: int = 1,
                 pp_interleave_num: int = 1,
                 offset: Union[int, list] = 0,
                 checkpoint_name_or_path: str = "",
                 repetition_penalty: float = 1.0,
                 max_decode_length: int = 1024,
                 block_size: int = 16,
                 num_blocks: int = 512,
                 top_k: int = 5,
                 top_p: float = 1.0,
                 do_sample: bool = True,
                 tie_word_embeddings: bool = False,
                 initializer_range: float = 0.02):
        args = {key: value for key, value in locals().items() if key != "self"}
        for key in ("batch_size", "seq_length", "hidden_size", "num_layers", "num_heads", "vocab_size",
                    "multiple_of", "max_decode_length"):
            positive_int(key, args[key])
        for key in ("n_kv_heads", "head_dim", "max_position_embedding", "intermediate_size"):
            if args[key] is not None:
                positive_int(key, args[key])
        for key in ("rms_norm_eps", "theta", "initializer_range", "repetition_penalty"):
            positive_number(key, args[key])
        if ffn_dim_multiplier is not None:
            positive_number("ffn_dim_multiplier", ffn_dim_multiplier)
        if not isinstance(scaling_factor, dict):
            positive_number("scaling_factor", scaling_factor)
        for key in ("qkv_has_bias", "qkv_concat", "use_past", "is_dynamic", "use_rope_slice",
                    "use_flash_attention", "do_sample", "tie_word_embeddings"):
            boolean(key, args[key])
        for key in ("compute_dtype", "layernorm_compute_type", "softmax_compute_type", "rotary_dtype",
                    "param_init_type"):
            check_dtype(key, args[key])
        if embedding_init_type is not None:
            check_dtype("embedding_init_type", embedding_init_type)
        for key, (default, why) in _UNSUPPORTED.items():
            if args[key] != default:
                raise ValueError(f"model_config.{key}={args[key]!r} is not supported: {why}")
        for key, (default, why) in _NO_EFFECT.items():
            if args[key] != default:
                log_once(f"model_config.{key}", "model_config.%s: has no effect here (%s)", key, why)
        offsets = offset if isinstance(offset, (list, tuple)) else [offset]
        if any(o != 0 for o in offsets):
            raise ValueError(f"model_config.offset={offset!r} is not supported: it moves layers between pipeline "
                             f"stages and pipeline parallel is not implemented; set offset: 0")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise ValueError(f"model_config.top_k must be an int >= 0, got {top_k!r}")
        if isinstance(top_p, bool) or not isinstance(top_p, numbers.Real) or not 0 < top_p <= 1:
            raise ValueError(f"model_config.top_p must be in (0, 1], got {top_p!r}")
        if not isinstance(checkpoint_name_or_path, str):
            raise ValueError(f"model_config.checkpoint_name_or_path must be a path string, "
                             f"got {checkpoint_name_or_path!r}")
        for key in ("parallel_config", "recompute_config"):
            if args[key] is not None and not isinstance(args[key], dict) and not hasattr(args[key], "__dict__"):
                raise ValueError(f"model_config.{key} must be a mapping or None, got {args[key]!r}")
        if pet_config is not None:  # checked here so a bad pet_config fails when the config is built
            LoraConfig.from_config(pet_config)
            args["pet_config"] = dict(pet_config)

        args["n_kv_heads"] = n_kv_heads = n_kv_heads or num_heads
        if hidden_size % num_heads:
            raise ValueError(f"model_config.hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
        # explicit in Qwen3 and GLM-4 (Qwen3-0.6B: 1024 wide, 16 heads of 128); else hidden_size / num_heads
        if head_dim is not None and head_dim % 2:
            raise ValueError(f"model_config.head_dim must be even for rotary embeddings, got {head_dim}")
        args["head_dim"] = head_dim = head_dim or hidden_size // num_heads
        if num_heads % n_kv_heads:
            raise ValueError(f"model_config.num_heads ({num_heads}) must be divisible by n_kv_heads ({n_kv_heads})")
        args["max_position_embedding"] = max_position_embedding or seq_length
        if args["max_position_embedding"] < seq_length:
            raise ValueError(f"model_config.max_position_embedding ({max_position_embedding}) must be >= "
                             f"seq_length ({seq_length}): rotary tables cover only max_position_embedding positions")
        args["extend_method"] = check_extend_method(extend_method)
        if rope_scaling is not None:
            # The Hugging Face form of extend_method/scaling_factor; both may be given only if they agree.
            method, factor = from_rope_scaling(rope_scaling)
            if (args["extend_method"], scaling_factor) not in (("None", 1.0), (method, factor)):
                raise ValueError(f"model_config.rope_scaling={rope_scaling!r} conflicts with extend_method="
                                 f"{extend_method!r}, scaling_factor={scaling_factor!r}; set only one of them")
            args["extend_method"] = method
            args["scaling_factor"] = scaling_factor = factor
        # Building a one-row table checks scaling_factor against the scaling type now, not at model build.
        rope_tables(head_dim, 1, theta, args["extend_method"], scaling_factor)
        args["embedding_init_type"] = embedding_init_type or param_init_type
        # use_rope_slice needs no handling: the sliced and unsliced Ascend rotary kernels compute the same
        # function as ours. The generation keys (top_k, ...) are read by the generation code.
        for section, keys in SECTION_KEYS.items():
            object.__setattr__(self, section, {key: args.pop(key) for key in keys})
        for key, value in args.items():
            setattr(self, key, value)

    @property
    def ffn_hidden_size(self) -> int:
        """SwiGLU width: `intermediate_size` if set, else derived from multiple_of/ffn_dim_multiplier."""
        if self.intermediate_size is not None:
            return self.intermediate_size
        return llama_ffn_hidden_size(self.hidden_size, self.multiple_of, self.ffn_dim_multiplier)

    def num_params(self, exclude_embeddings: bool = False) -> int:
        """Parameter count of LlamaForCausalLM; `exclude_embeddings` drops the input embedding table."""
        c, v, f = self.hidden_size, self.vocab_size, self.ffn_hidden_size
        q_out, kv_out = self.num_heads * self.head_dim, self.n_kv_heads * self.head_dim
        attn = c * q_out + 2 * c * kv_out + q_out * c
        if self.qkv_has_bias:
            attn += q_out + 2 * kv_out
        layer = attn + 3 * c * f + 2 * c  # attention, SwiGLU, two RMSNorms
        lm_head = 0 if self.tie_word_embeddings else v * c
        embedding = 0 if exclude_embeddings else v * c
        return embedding + self.num_layers * layer + c + lm_head

    def flops_per_token(self) -> int:
        """Training FLOPs per token (forward + backward) at seq_length, for MFU.

        PaLM (Chowdhery et al. 2022, appendix B): 6 * N + 12 * L * H * Q * T, where N counts the parameters
        that take part in matmuls (everything except the input embedding lookup; the lm_head counts even when
        tied), L layers, H heads, Q head dim, T = seq_length. 6 = 2 FLOPs per multiply-add x (1 forward +
        2 backward); the attention term is QK^T and AV (2 * 2 * T * H * Q per token per layer, times 3), counted
        without the causal half-saving, as PaLM does.
        """
        n_matmul = self.num_params(exclude_embeddings=True)
        if self.tie_word_embeddings:
            n_matmul += self.vocab_size * self.hidden_size
        return 6 * n_matmul + 12 * self.num_layers * self.num_heads * self.head_dim * self.seq_length
