"""LlamaConfig: upstream keys, validation, unsupported features, parameter and FLOP counts."""
import pytest

from mindformers.models import LlamaConfig
from mindformers.tools.register import MindFormerModuleType, MindFormerRegister, build_from_config

# The model_config section of upstream's configs/llama2/pretrain_llama2_7b.yaml, with the CPU dtypes.
LLAMA2_7B = {
    "type": "LlamaConfig", "batch_size": 1, "seq_length": 4096, "hidden_size": 4096, "num_layers": 32,
    "num_heads": 32, "vocab_size": 32000, "multiple_of": 256, "rms_norm_eps": 1.0e-5, "bos_token_id": 1,
    "eos_token_id": 2, "pad_token_id": 0, "ignore_token_id": -100, "compute_dtype": "float32",
    "layernorm_compute_type": "float32", "softmax_compute_type": "float32", "rotary_dtype": "float32",
    "param_init_type": "float32", "use_past": False, "scaling_factor": 1.0, "extend_method": "None",
    "use_flash_attention": False, "offset": 0, "checkpoint_name_or_path": "", "repetition_penalty": 1,
    "max_decode_length": 512, "top_k": 3, "top_p": 1, "do_sample": False,
}
TINY = dict(seq_length=16, hidden_size=32, num_layers=2, num_heads=4, vocab_size=64, multiple_of=8)


def test_registered_and_built_from_upstream_yaml_keys():
    assert MindFormerRegister.get_cls(MindFormerModuleType.CONFIG, "LlamaConfig") is LlamaConfig
    config = build_from_config(LLAMA2_7B, MindFormerModuleType.CONFIG)
    assert config.n_kv_heads == 32 and config.max_position_embedding == 4096
    assert config.ffn_hidden_size == 11008 and config.head_dim == 128
    assert config.embedding_init_type == "float32"


def test_to_dict_rebuilds_the_same_config():
    config = LlamaConfig(n_kv_heads=2, intermediate_size=40, parallel_config={"data_parallel": 2}, **TINY)
    again = LlamaConfig(**config.to_dict())
    assert again.to_dict() == config.to_dict()
    assert config.to_dict()["parallel_config"] == {"data_parallel": 2}


def test_keys_that_are_not_the_architecture_live_in_their_own_sections():
    config = build_from_config(LLAMA2_7B, MindFormerModuleType.CONFIG)
    assert config.generation == {"use_past": False, "do_sample": False, "top_k": 3, "top_p": 1,
                                 "repetition_penalty": 1, "max_decode_length": 512}
    assert config.parallel == {"parallel_config": None, "recompute_config": None, "offset": 0,
                               "pp_interleave_num": 1}
    assert config.weights == {"checkpoint_name_or_path": "", "pet_config": None}
    assert config.layout["use_flash_attention"] is False and config.layout["batch_size"] == 1
    sectioned = {key for keys in (config.generation, config.parallel, config.weights, config.layout) for key in keys}
    assert not sectioned & set(vars(config))  # the object's own attributes are the architecture
    # the upstream names still read and write the sections (notebooks set config.use_past = True)
    config.use_past = True
    assert config.generation["use_past"] is True and config.use_past is True
    assert config.to_dict()["use_past"] is True and config.to_dict()["top_k"] == 3
    with pytest.raises(AttributeError, match="no attribute 'not_a_key'"):
        config.not_a_key


def test_unknown_key_names_the_key():
    with pytest.raises(TypeError, match="unknown argument 'num_head'.*did you mean 'num_heads'"):
        build_from_config({"type": "LlamaConfig", "num_head": 8}, MindFormerModuleType.CONFIG)


@pytest.mark.parametrize("key, value, message", [
    ("hidden_size", 30, r"hidden_size \(30\) must be divisible by num_heads \(4\)"),
    ("n_kv_heads", 3, r"num_heads \(4\) must be divisible by n_kv_heads \(3\)"),
    ("compute_dtype", "fp16", "compute_dtype must be one of float32, float16, bfloat16, got 'fp16'"),
    ("embedding_init_type", "float64", "embedding_init_type must be one of"),
    ("num_layers", 0, "num_layers must be a positive int"),
    ("use_past", "False", "use_past must be True or False"),
    ("max_position_embedding", 8, r"max_position_embedding \(8\) must be >= seq_length \(16\)"),
    ("top_p", 1.5, r"top_p must be in \(0, 1\]"),
    ("parallel_config", 3, "parallel_config must be a mapping or None"),
])
def test_invalid_values_are_errors(key, value, message):
    with pytest.raises(ValueError, match=message):
        LlamaConfig(**{**TINY, key: value})


@pytest.mark.parametrize("key, value", [
    ("pp_interleave_num", 2), ("offset", [0, 1]), ("extend_method", "FOO"),
    ("scaling_factor", 2.0),  # without a scaling type it would change nothing
])
def test_unsupported_features_are_refused_by_name(key, value):
    with pytest.raises(ValueError, match=f"model_config.{key}"):
        LlamaConfig(**{**TINY, key: value})


@pytest.mark.parametrize("key, value", [
    ("is_dynamic", True), ("block_size", 32), ("num_blocks", 1024), ("qkv_concat", True),
    ("fine_grain_interleave", 2)])
def test_ascend_layout_hints_are_logged_once_and_change_nothing(key, value, caplog, monkeypatch):
    import logging
    from mindformers.tools import logger as log
    monkeypatch.setattr(log, "LOGGED_ONCE", set())  # an earlier test may have logged this key
    with caplog.at_level(logging.INFO, logger="mindformers"):
        LlamaConfig(**{**TINY, key: value})
        config = LlamaConfig(**{**TINY, key: value})
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [f"model_config.{key}"]
    assert config.num_params() == LlamaConfig(**TINY).num_params()


def test_supported_scaling_and_accepted_no_op_keys():
    config = LlamaConfig(extend_method="PI", scaling_factor=2.0, use_rope_slice=True, offset=[0, 0],
                         recompute_config={"recompute": False}, **TINY)
    assert config.extend_method == "PI"
    assert LlamaConfig(extend_method=None, **TINY).extend_method == "None"


@pytest.mark.parametrize("overrides, expected", [
    ({}, 6_738_415_616),  # Llama 2 7B (Hugging Face count)
    ({"vocab_size": 128256, "n_kv_heads": 8, "intermediate_size": 14336}, 8_030_261_248),  # Llama 3 8B
])
def test_num_params_of_published_models(overrides, expected):
    config = LlamaConfig(**{**{k: v for k, v in LLAMA2_7B.items() if k != "type"}, **overrides})
    assert config.num_params() == expected
    vocab, hidden = config.vocab_size, config.hidden_size
    assert config.num_params(exclude_embeddings=True) == expected - vocab * hidden


def test_flops_per_token_formula():
    config = LlamaConfig(n_kv_heads=2, **TINY)
    # Per layer: q,o 32x32 each, k,v 32x16 each, SwiGLU 3 x 32x88, norms 2x32; plus final norm and lm_head.
    f = config.ffn_hidden_size
    assert f == 88
    n_matmul = 2 * (2 * 32 * 32 + 2 * 32 * 16 + 3 * 32 * f + 2 * 32) + 32 + 64 * 32
    assert config.num_params(exclude_embeddings=True) == n_matmul
    assert config.flops_per_token() == 6 * n_matmul + 12 * 2 * 4 * 8 * 16
    tied = LlamaConfig(n_kv_heads=2, tie_word_embeddings=True, **TINY)
    assert tied.num_params() == config.num_params() - 64 * 32
    assert tied.flops_per_token() == config.flops_per_token()
