"""GLM-4: sandwich norms, partial interleaved RoPE, fused gate_up_proj — HF parity and round trip, KV cache,
training, configs, and the errors for what is not supported."""
import json
import os
import shutil
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from family_checks import ROOT, build_from_yaml, check_names
from mindformers.config import load_config
from mindformers.generation import generate
from mindformers.generation.runners import make_runner
from mindformers.models import Glm4Config, Glm4ForCausalLM
from mindformers.models.glm4.glm4 import interleaved_rope_order, partial_rope_tables
from mindformers.models.hf import config_from_hf, from_pretrained, read_weights_dir, save_pretrained
from mindformers.modules import apply_rotary
from mindformers.trainer.builders import build_model

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "hf_tiny_glm4")  # scripts/make_hf_fixture_glm4.py
# 4 heads of 16 (attention 64 wide over a 32-wide stream), 8 of 16 dims rotate; 0.3 init spreads the logits
# so greedy choices are not near-ties.
TINY = dict(seq_length=16, max_position_embedding=64, hidden_size=32, num_layers=2, num_heads=4, n_kv_heads=2,
            head_dim=16, vocab_size=64, intermediate_size=48, initializer_range=0.3, bos_token_id=1,
            eos_token_id=2, pad_token_id=0)

pytestmark = pytest.mark.usefixtures("graph_mode")


@pytest.fixture(scope="module")
def net():
    ms.set_seed(0)
    model = Glm4ForCausalLM(Glm4Config(**TINY))
    for name, param in model.parameters_and_names():  # norm weights start at one: make the extra norms matter
        if name.endswith("layernorm.weight"):
            param.set_data(Tensor(np.random.default_rng(1).uniform(0.5, 1.5, param.shape).astype(np.float32)))
    return model


def test_config_keys_defaults_and_errors():
    config = Glm4Config(**TINY)
    assert (config.head_dim, config.rotary_dim, config.qkv_has_bias) == (16, 8, True)
    assert Glm4Config(**{**TINY, "head_dim": None}).head_dim == 8
    assert Glm4Config(**config.to_dict()).to_dict() == config.to_dict()
    defaults = Glm4Config()
    assert (defaults.vocab_size, defaults.partial_rotary_factor, defaults.bos_token_id) == (151552, 0.5, None)
    with pytest.raises(ValueError, match=r"partial_rotary_factor must be in \(0, 1\], got 1.5"):
        Glm4Config(**{**TINY, "partial_rotary_factor": 1.5})
    with pytest.raises(ValueError, match="rotates 5 of head_dim 16 dims; that must be a positive even number"):
        Glm4Config(**{**TINY, "partial_rotary_factor": 0.3125})
    with pytest.raises(ValueError, match="model_config.head_dim must be even"):
        Glm4Config(**{**TINY, "head_dim": 15})


def test_rope_reorder_equals_interleaved_partial_rotation():
    """Our half-split RoPE on reordered dims == Hugging Face's GLM rotation (adjacent pairs, first dims only)."""
    hs, rot, T = 16, 8, 5
    x = np.random.default_rng(0).standard_normal((1, 2, T, hs))
    inv_freq = 1.0 / 10000.0 ** (np.arange(0, rot, 2) / rot)
    angles = np.repeat(np.outer(np.arange(T), inv_freq), 2, -1)  # (T, rot): each frequency for a dim pair
    pairs = x[..., :rot].reshape(1, 2, T, rot // 2, 2)
    rotated = np.stack([-pairs[..., 1], pairs[..., 0]], -1).reshape(1, 2, T, rot)
    expected = np.concatenate([x[..., :rot] * np.cos(angles) + rotated * np.sin(angles), x[..., rot:]], -1)
    order = interleaved_rope_order(hs, rot)
    assert sorted(order.tolist()) == list(range(hs))
    cos, sin = partial_rope_tables(hs, rot, T, 10000.0)
    got = apply_rotary(Tensor(x[..., order], ms.float64), Tensor(cos, ms.float64), Tensor(sin, ms.float64))
    np.testing.assert_allclose(got.asnumpy(), expected[..., order], atol=1e-12)


def test_hugging_face_names_and_shapes(net):
    check_names(net, ["input_layernorm.weight", "post_self_attn_layernorm.weight",
                      "post_attention_layernorm.weight", "post_mlp_layernorm.weight",
                      "self_attn.q_proj.weight", "self_attn.q_proj.bias", "self_attn.k_proj.weight",
                      "self_attn.k_proj.bias", "self_attn.v_proj.weight", "self_attn.v_proj.bias",
                      "self_attn.o_proj.weight", "mlp.gate_up_proj.weight", "mlp.down_proj.weight"])
    shapes = {name: p.shape for name, p in net.parameters_and_names()}
    assert shapes["model.layers.0.self_attn.q_proj.weight"] == (64, 32)
    assert shapes["model.layers.0.self_attn.k_proj.bias"] == (32,)
    assert shapes["model.layers.0.mlp.gate_up_proj.weight"] == (96, 32)
    assert shapes["model.layers.0.mlp.down_proj.weight"] == (32, 48)



def test_logits_match_transformers():
    net = from_pretrained(FIXTURE)
    assert isinstance(net, Glm4ForCausalLM)
    assert (net.config.head_dim, net.config.rotary_dim, net.config.qkv_has_bias) == (16, 8, True)
    ids, expected = np.load(os.path.join(FIXTURE, "input_ids.npy")), np.load(os.path.join(FIXTURE, "logits.npy"))
    assert np.abs(net(Tensor(ids, ms.int32)).asnumpy() - expected).max() <= 1e-4


def test_pretrained_model_dir_in_a_yaml_loads_with_no_conversion():
    config = load_config(os.path.join(ROOT, "configs/glm4/pretrain_glm4_tiny.yaml"),
                         {"pretrained_model_dir": FIXTURE})
    config.model.model_config = {"type": "Glm4Config", "seq_length": 32}
    network = build_model(config)
    assert isinstance(network, Glm4ForCausalLM) and network.config.seq_length == 32
    weights = read_weights_dir(FIXTURE)
    for p in network.get_parameters():
        np.testing.assert_array_equal(p.asnumpy(), weights[p.name])


def test_round_trip_is_bit_exact(tmp_path):
    original = read_weights_dir(FIXTURE)
    net = from_pretrained(FIXTURE)
    for dtype in ("float32", "bfloat16"):
        save_pretrained(net, str(tmp_path / dtype), dtype=dtype)
        again = read_weights_dir(str(tmp_path / dtype))
        assert sorted(again) == sorted(original) and "model.layers.1.mlp.gate_up_proj.weight" in again
        for name, value in original.items():
            assert np.array_equal(again[name], value), name
    with open(tmp_path / "float32" / "config.json", encoding="utf-8") as f:
        hf = json.load(f)
    assert hf["model_type"] == "glm4" and hf["architectures"] == ["Glm4ForCausalLM"]
    assert (hf["partial_rotary_factor"], hf["head_dim"], hf["attention_bias"]) == (0.5, 16, True)
    assert config_from_hf(str(tmp_path / "float32")).to_dict() == net.config.to_dict()


def _fixture_copy_with(tmp_path, **changes):
    shutil.copytree(FIXTURE, tmp_path / "hf")
    path = tmp_path / "hf" / "config.json"
    hf = json.loads(path.read_text(encoding="utf-8"))
    hf.update(changes)
    path.write_text(json.dumps(hf), encoding="utf-8")
    return str(tmp_path / "hf")


def test_unsupported_config_json_values_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="config.json hidden_act='gelu' is not supported"):
        config_from_hf(_fixture_copy_with(tmp_path / "act", hidden_act="gelu"))
    rope = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.3125}
    with pytest.raises(ValueError, match="partial_rotary_factor=0.3125 rotates 5 of head_dim 16 dims"):
        config_from_hf(_fixture_copy_with(tmp_path / "rope", rope_parameters=rope))
    # transformers 4.x put the factor at the top level; it is read from there too
    legacy = _fixture_copy_with(tmp_path / "legacy", rope_parameters=None, rope_theta=10000.0,
                                partial_rotary_factor=0.25)
    assert config_from_hf(legacy).rotary_dim == 4


def test_kv_cache_decode_and_greedy_match_the_no_cache_forward(net):
    prompt, n = [3, 17, 42, 5, 9, 11], 6
    new = generate(net, [prompt], max_new_tokens=n, use_past=True, do_sample=False, eos_token_id=[])[0]
    seq = prompt + new
    # One full causal forward over the result gives what an argmax loop without cache would see at every step.
    full = net(Tensor(np.array([seq], np.int32))).asnumpy()[0]
    assert len(new) == n and full[len(prompt) - 1:-1].argmax(-1).tolist() == new
    assert generate(net, [prompt], max_new_tokens=n, use_past=False, do_sample=False, eos_token_id=[])[0] == new
    # and the cached prefill/decode logits themselves equal the full forward's
    runner, prompt_len = make_runner(net, 1, len(prompt), n, use_past=True)
    ids = np.zeros((1, prompt_len), np.int32)
    ids[0, prompt_len - len(prompt):] = prompt
    steps = [runner.start(ids, np.array([prompt_len - len(prompt)]))]
    steps += [runner.step(np.array([t])) for t in new[:-1]]
    np.testing.assert_allclose(np.stack(steps)[:, 0], full[len(prompt) - 1:-1], atol=1e-5, rtol=0)



def test_real_size_config_has_the_published_size():
    config, arch = build_from_yaml("glm4/predict_glm4_9b.yaml")
    assert arch == "Glm4ForCausalLM" and config.rotary_dim == 64
    c, f, q, kv = 4096, 13696, 32 * 128, 2 * 128
    layer = c * q + q + 2 * (c * kv + kv) + q * c + 3 * c * f + 4 * c  # biased q/k/v, o, gate_up + down, 4 norms
    assert config.num_params() == 2 * 151552 * c + 40 * layer + c == 9_400_279_040  # 9.4B, as published


@pytest.mark.slow
def test_tiny_pretrain_trains_through_run_mindformer(tmp_path):
    cmd = [sys.executable, "run_mindformer.py", "--config", "configs/glm4/pretrain_glm4_tiny.yaml",
           "--run_mode", "train", "--output_dir", str(tmp_path), "--runner_config.stop_step", "12",
           "--model.model_config.num_layers", "2", "--lr_schedule.warmup_steps", "2"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, GLOG_v="3"))
    assert out.returncode == 0, out.stderr[-3000:]
    records = [json.loads(line) for line in open(tmp_path / "log" / "train_metrics.jsonl", encoding="utf-8")]
    assert [r["step"] for r in records] == list(range(1, 13))
    assert np.mean([r["loss"] for r in records[-3:]]) < np.mean([r["loss"] for r in records[:3]]) - 0.5
