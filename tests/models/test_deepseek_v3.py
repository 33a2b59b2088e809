"""DeepSeek-V3: HF parity (MLA, group-limited sigmoid router, shared experts), bit-exact export, KV-cache
generation, config errors, training and the shipped YAMLs."""
import json
import os

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from family_checks import build_from_yaml
from mindformers.generation import generate
from mindformers.models import DeepseekV3Config
from mindformers.models.hf import config_from_hf, from_pretrained, read_weights_dir, save_pretrained, \
    write_safetensors

# PYNATIVE: each model instance would otherwise compile its own forward graph (~20 s each on this machine);
# generation still runs its compiled prefill/decode graphs, and training its compiled step.
pytestmark = pytest.mark.usefixtures("pynative_mode")

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "hf_tiny_deepseek_v3")
# q_proj instead of low-rank q, half-split RoPE, one expert group, attention biases, no dense layer
PLAIN_Q = os.path.join(FIXTURE, "plain_q")

TINY = dict(seq_length=32, hidden_size=32, num_layers=2, num_heads=4, vocab_size=64, intermediate_size=64,
            q_lora_rank=16, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8,
            moe_intermediate_size=16, n_routed_experts=4, n_shared_experts=1, num_experts_per_tok=2, n_group=2,
            topk_group=1, first_k_dense_replace=1, initializer_range=0.1)


@pytest.fixture(scope="module")
def net():
    return from_pretrained(FIXTURE)


def _logits(model, ids):
    return model(Tensor(ids, ms.int32)).asnumpy()


@pytest.mark.parametrize("fixture", [FIXTURE, PLAIN_Q], ids=os.path.basename)
def test_logits_match_transformers(fixture, net):
    model = net if fixture == FIXTURE else from_pretrained(fixture)
    ids, expected = np.load(os.path.join(fixture, "input_ids.npy")), np.load(os.path.join(fixture, "logits.npy"))
    assert np.abs(_logits(model, ids) - expected).max() <= 1e-4


def test_parameters_are_the_checkpoint_tensors(net):
    names = {name for name, _ in net.parameters_and_names()}
    assert names == set(read_weights_dir(FIXTURE))  # loaded as they are: no renaming, no conversion
    assert "model.layers.0.mlp.gate_proj.weight" in names  # first_k_dense_replace=1: layer 0 is dense
    assert "model.layers.1.mlp.shared_experts.up_proj.weight" in names
    assert "model.layers.2.self_attn.q_a_layernorm.weight" in names
    bias = net.model.layers[1].mlp.gate.e_score_correction_bias
    assert not bias.requires_grad and bias.name not in [p.name for p in net.trainable_params()]


def test_routing_bias_only_selects(net):
    """Zeroing e_score_correction_bias changes which experts run, so the logits move off HF's."""
    ids, expected = np.load(os.path.join(FIXTURE, "input_ids.npy")), np.load(os.path.join(FIXTURE, "logits.npy"))
    biases = [layer.mlp.gate.e_score_correction_bias for layer in net.model.layers[1:]]
    saved = [b.asnumpy() for b in biases]
    try:
        for b in biases:
            b.set_data(Tensor(np.zeros(b.shape, np.float32)))
        assert np.abs(_logits(net, ids) - expected).max() > 1e-2
    finally:
        for b, value in zip(biases, saved):
            b.set_data(Tensor(value))
    assert np.abs(_logits(net, ids) - expected).max() <= 1e-4


def test_config_from_config_json(net):
    config = net.config
    assert (config.q_lora_rank, config.kv_lora_rank, config.qk_head_dim, config.v_head_dim) == (24, 16, 16, 12)
    assert (config.n_routed_experts, config.n_group, config.topk_group, config.first_k_dense_replace) == (8, 4, 2, 1)
    assert config.extend_method == "yarn" and config.rope_interleave
    # yarn with mscale_all_dim: 1/sqrt(16) * (0.1 * 0.707 * ln 4 + 1)^2
    assert config.softmax_scale == pytest.approx(0.25 * (0.0707 * np.log(4.0) + 1) ** 2)
    plain = config_from_hf(PLAIN_Q)
    assert plain.q_lora_rank == 0 and not plain.rope_interleave and plain.qkv_has_bias


@pytest.mark.parametrize("fixture", [FIXTURE, PLAIN_Q], ids=os.path.basename)
def test_round_trip_is_bit_exact(fixture, tmp_path):
    original = read_weights_dir(fixture)
    model = from_pretrained(fixture)
    for dtype in ("float32", "bfloat16"):
        out = str(tmp_path / dtype)
        save_pretrained(model, out, dtype=dtype)
        again = read_weights_dir(out)
        assert sorted(again) == sorted(original)
        assert all(np.array_equal(again[name].astype(np.float32), value) for name, value in original.items())
        assert config_from_hf(out).to_dict() == model.config.to_dict()
    with open(tmp_path / "float32" / "config.json", encoding="utf-8") as f:
        hf = json.load(f)
    with open(os.path.join(fixture, "config.json"), encoding="utf-8") as f:
        reference = json.load(f)
    assert hf["model_type"] == "deepseek_v3" and hf["architectures"] == ["DeepseekV3ForCausalLM"]
    for key in ("q_lora_rank", "kv_lora_rank", "n_group", "topk_group", "rope_interleave", "attention_bias",
                "first_k_dense_replace", "routed_scaling_factor", "n_shared_experts", "num_key_value_heads"):
        assert hf[key] == reference[key], key  # q_lora_rank stays null for plain_q


def test_greedy_with_kv_cache_equals_no_cache_argmax(net):
    ids = np.load(os.path.join(FIXTURE, "input_ids.npy"))
    prompts = [ids[0, :5].tolist(), ids[1, :9].tolist()]  # batched: the shorter one is left-padded
    cached = generate(net, prompts, max_new_tokens=6, use_past=True, do_sample=False, eos_token_id=[])
    for prompt, new_ids in zip(prompts, cached):
        seq = list(prompt)
        for _ in range(6):  # no cache: the whole sequence again for every token
            seq.append(int(_logits(net, np.array([seq]))[0, -1].argmax()))
        assert new_ids == seq[len(prompt):]


def test_kv_cache_holds_the_compressed_latent(net):
    latent, rope_key = net.init_kv_caches(2, 8)[0]
    assert latent.shape == (2, 1, 8, 16) and rope_key.shape == (2, 1, 8, 8)  # kv_lora_rank, qk_rope_head_dim


@pytest.mark.parametrize("key, value, match", [
    ("topk_method", "greedy", "topk_method='greedy' is not supported.*noaux_tc"),
    ("scoring_func", "softmax", "scoring_func='softmax' is not supported.*sigmoid"),
    ("moe_layer_freq", 2, "moe_layer_freq=2 is not supported"),
    ("num_key_value_heads", 2, "num_key_value_heads=2 is not supported: MLA"),
    ("n_group", 3, "n_routed_experts .8. must split into n_group .3."),
])
def test_unsupported_config_json_values(tmp_path, key, value, match):
    with open(os.path.join(FIXTURE, "config.json"), encoding="utf-8") as f:
        hf = json.load(f)
    (tmp_path / "config.json").write_text(json.dumps({**hf, key: value}))
    with pytest.raises(ValueError, match=match):
        config_from_hf(str(tmp_path))


@pytest.mark.parametrize("overrides, match", [
    ({"topk_group": 3}, "topk_group .3. must be <= n_group .2."),
    ({"num_experts_per_tok": 3}, "num_experts_per_tok .3. must be <= the experts in topk_group=1 groups .2."),
    ({"n_kv_heads": 2}, "n_kv_heads .2. must equal num_heads .4."),
    ({"qk_rope_head_dim": 7}, "qk_rope_head_dim must be even"),
    ({"first_k_dense_replace": 3}, "first_k_dense_replace .3. must be <= num_layers .2."),
    ({"routed_scaling_factor": 0}, "routed_scaling_factor must be a positive number"),
])
def test_config_errors_name_the_key(overrides, match):
    with pytest.raises(ValueError, match=f"model_config.{match}"):
        DeepseekV3Config(**{**TINY, **overrides})


def test_multi_token_prediction_layers_are_skipped(net, tmp_path):
    with open(os.path.join(FIXTURE, "config.json"), encoding="utf-8") as f:
        hf = json.load(f)
    (tmp_path / "config.json").write_text(json.dumps({**hf, "num_nextn_predict_layers": 1}))
    weights = read_weights_dir(FIXTURE)
    weights["model.layers.3.eh_proj.weight"] = np.zeros((32, 64), np.float32)  # an MTP module's tensor
    write_safetensors(str(tmp_path / "model.safetensors"), weights)
    loaded = {name: p.asnumpy() for name, p in from_pretrained(str(tmp_path)).parameters_and_names()}
    assert all(np.array_equal(loaded[name], p.asnumpy()) for name, p in net.parameters_and_names())






def test_deepseek_v3_config_has_published_size():
    config, arch = build_from_yaml("deepseek_v3/predict_deepseek_v3.yaml")
    assert arch == "DeepseekV3ForCausalLM"
    assert round(config.num_params() / 1e9) == 671  # model card: 671B total (+14B MTP module), 37B activated
    assert round(config.num_active_params() / 1e9) in (37, 38)  # we count 37.55B
    assert config.extend_method == "yarn" and config.softmax_scale > config.qk_head_dim ** -0.5
