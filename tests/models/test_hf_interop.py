"""Hugging Face directories: logits parity with transformers fixtures, bit-exact export, strict loading."""
import json
import os
import shutil

import mindspore as ms
import numpy as np
import pytest

from mindformers.models import LlamaConfig, LlamaForCausalLM
from mindformers.models.hf import (config_from_hf, from_pretrained, hf_config_dict, read_safetensors,
                                   read_weights_dir, save_pretrained, tokenizer_from_hf, write_safetensors)
from mindformers.checkpoint.safetensors_io import bf16_bits_to_fp32, fp32_to_bf16_bits

pytestmark = pytest.mark.usefixtures("graph_mode")

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures")
LLAMA2 = os.path.join(FIXTURES, "hf_tiny_llama")    # MHA, untied head, sentencepiece tokenizer
LLAMA3 = os.path.join(FIXTURES, "hf_tiny_llama3")   # GQA, tied embeddings, llama3 rope scaling
# the other families' HF classes (all fixtures store bf16 weights; made by scripts/make_hf_fixtures.py)
FAMILIES = {name: os.path.join(FIXTURES, f"hf_tiny_{name}") for name in ("qwen2", "qwen3", "mixtral", "qwen3_moe")}


def _logits(net, ids):
    return net(ms.Tensor(ids, ms.int32)).asnumpy()


@pytest.mark.parametrize("fixture", [LLAMA2, LLAMA3, *FAMILIES.values()], ids=os.path.basename)
def test_logits_match_transformers(fixture):
    net = from_pretrained(fixture)
    ids, expected = np.load(os.path.join(fixture, "input_ids.npy")), np.load(os.path.join(fixture, "logits.npy"))
    assert np.abs(_logits(net, ids) - expected).max() <= 1e-5


def test_family_classes_follow_model_type():
    for name, path in FAMILIES.items():
        net = from_pretrained(path)
        assert type(net).__name__.lower().startswith(name.replace("_", "")), type(net).__name__
        assert hf_config_dict(net.config)["model_type"] == name


def test_config_from_config_json():
    config = config_from_hf(LLAMA3)
    assert (config.num_heads, config.n_kv_heads, config.head_dim, config.theta) == (4, 2, 16, 500000.0)
    assert config.tie_word_embeddings and config.extend_method == "llama3"
    assert config.scaling_factor["original_max_position_embeddings"] == 32
    assert config.eos_token_id == 251  # config.json lists [251, 252]; the model config keeps the first


def test_yaml_keys_override_config_json():
    config = config_from_hf(LLAMA2, {"type": "LlamaConfig", "seq_length": 16, "use_past": True})
    assert config.seq_length == 16 and config.use_past and config.max_position_embedding == 128
    with pytest.raises(ValueError, match="model_config.type Qwen2Config does not match"):
        config_from_hf(LLAMA2, {"type": "Qwen2Config"})


def test_unsupported_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="model_type 'gpt2' is not supported; supported: .*llama"):
        config_from_hf(str(tmp_path))


@pytest.mark.parametrize("fixture", [LLAMA2, LLAMA3, *FAMILIES.values()], ids=os.path.basename)
def test_round_trip_is_bit_exact(fixture, tmp_path):
    original = read_weights_dir(fixture)
    net = from_pretrained(fixture)
    save_pretrained(net, str(tmp_path / "fp32"))
    again = read_weights_dir(str(tmp_path / "fp32"))
    assert sorted(again) == sorted(original)
    for name, value in original.items():
        assert again[name].dtype == np.float32 and np.array_equal(again[name], value), name
    # stored as bfloat16 again, the bf16 fixture comes back with the same bits
    save_pretrained(net, str(tmp_path / "bf16"), dtype="bfloat16")
    header_dtypes = _header_dtypes(str(tmp_path / "bf16" / "model.safetensors"))
    assert set(header_dtypes) == {"BF16"}
    assert all(np.array_equal(v, original[k]) for k, v in read_weights_dir(str(tmp_path / "bf16")).items())
    assert config_from_hf(str(tmp_path / "fp32")).to_dict() == net.config.to_dict()


def _header_dtypes(path):
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
    return [v["dtype"] for k, v in header.items() if k != "__metadata__"]


def test_exported_config_json_reloads_the_same_config(tmp_path):
    net = from_pretrained(LLAMA3)
    save_pretrained(net, str(tmp_path))
    with open(tmp_path / "config.json", encoding="utf-8") as f:
        hf = json.load(f)
    assert hf["model_type"] == "llama" and hf["architectures"] == ["LlamaForCausalLM"]
    assert hf["rope_scaling"]["rope_type"] == "llama3" and hf["num_key_value_heads"] == 2
    assert "lm_head.weight" not in read_weights_dir(str(tmp_path))  # tied, as HF saves it
    assert config_from_hf(str(tmp_path)).to_dict() == net.config.to_dict()


def test_sharded_save_and_load(tmp_path):
    net = from_pretrained(LLAMA2)
    save_pretrained(net, str(tmp_path), max_shard_size=100_000)
    with open(tmp_path / "model.safetensors.index.json", encoding="utf-8") as f:
        index = json.load(f)
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 1 and files[0] == f"model-00001-of-{len(files):05d}.safetensors"
    assert not (tmp_path / "model.safetensors").exists()
    ids = np.load(os.path.join(LLAMA2, "input_ids.npy"))
    np.testing.assert_array_equal(_logits(from_pretrained(str(tmp_path)), ids), _logits(net, ids))


def test_missing_and_unexpected_weights_are_listed(tmp_path):
    shutil.copy(os.path.join(LLAMA2, "config.json"), tmp_path)
    weights = read_weights_dir(LLAMA2)
    weights.pop("model.layers.1.mlp.up_proj.weight")
    weights["model.layers.9.extra.weight"] = np.zeros(3, np.float32)
    write_safetensors(str(tmp_path / "model.safetensors"), weights)
    with pytest.raises(ValueError, match=r"missing from checkpoint \(1\): model.layers.1.mlp.up_proj.weight \| "
                                         r"not in model \(1\): model.layers.9.extra.weight"):
        from_pretrained(str(tmp_path))


def test_untied_config_without_lm_head_says_how_to_fix(tmp_path):
    shutil.copy(os.path.join(LLAMA2, "config.json"), tmp_path)
    weights = read_weights_dir(LLAMA2)
    weights.pop("lm_head.weight")
    write_safetensors(str(tmp_path / "model.safetensors"), weights)
    with pytest.raises(ValueError,
                       match=r"missing from checkpoint \(1\): lm_head.weight .set tie_word_embeddings: true"):
        from_pretrained(str(tmp_path))
    # tied, the same file loads
    assert from_pretrained(str(tmp_path), tie_word_embeddings=True).config.tie_word_embeddings


def test_bf16_bit_conversion():
    x = np.array([1.0, -2.5, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 3.0e38, np.inf, np.nan], np.float32)
    bits = fp32_to_bf16_bits(x)
    # bf16's ulp at 1 is 2^-7: 1 + 2^-8 ties to even 1.0, and 1 + 3 * 2^-8 ties to even 1 + 2^-6
    assert list(bits[:4]) == [0x3F80, 0xC020, 0x3F80, 0x3F82]
    back = bf16_bits_to_fp32(bits)
    assert back[5] == np.inf and np.isnan(back[6])
    assert abs(back[4] - 3.0e38) / 3.0e38 < 2 ** -8


def test_non_float32_files_read(tmp_path):
    path = str(tmp_path / "x.safetensors")
    write_safetensors(path, {"a": np.array([[1.5, -3.0]], np.float32)}, dtype="float16")
    out = read_safetensors(path)["a"]
    assert out.dtype == np.float16 and out.tolist() == [[1.5, -3.0]]


def test_export_of_a_model_built_here_loads_back(tmp_path):
    config = LlamaConfig(hidden_size=32, num_layers=1, num_heads=4, n_kv_heads=2, vocab_size=64, seq_length=16,
                         extend_method="linear", scaling_factor=2.0)
    net = LlamaForCausalLM(config)
    save_pretrained(net, str(tmp_path))
    assert hf_config_dict(config)["rope_scaling"] == {"rope_type": "linear", "factor": 2.0}
    ids = np.arange(10).reshape(1, 10)
    np.testing.assert_array_equal(_logits(from_pretrained(str(tmp_path)), ids), _logits(net, ids))


def test_tokenizer_from_directory(tmp_path):
    tok = tokenizer_from_hf(LLAMA2)
    assert tok.vocab_size == 2048 and tok.bos_token_id == 1
    assert tok.decode(tok.encode("Return the value")) == "Return the value"
    # a tokenizer.json-only directory loads through the HF `tokenizers` backend (predict: test_auto_tokenizer.py)
    shutil.copy(os.path.join(FIXTURES, "hf_tiny_bpe_tokenizer", "tokenizer.json"), tmp_path)
    fast = tokenizer_from_hf(str(tmp_path))
    assert type(fast).__name__ == "PreTrainedTokenizerFast" and fast.decode(fast.encode("Return the")) == "Return the"
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ValueError, match="tokenizer.json is not a readable tokenizers tokenizer.json"):
        tokenizer_from_hf(str(tmp_path))
