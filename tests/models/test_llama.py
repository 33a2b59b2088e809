"""LlamaForCausalLM in GRAPH mode on CPU: names, numerics against numpy, loss, causality, training."""
import logging

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from mindformers.models import LlamaConfig, LlamaForCausalLM
from mindformers.tools.register import MindFormerModuleType, MindFormerRegister, build_from_config

TINY = dict(seq_length=16, hidden_size=32, num_layers=2, num_heads=4, n_kv_heads=2, vocab_size=64,
            multiple_of=8, initializer_range=0.1)


pytestmark = pytest.mark.usefixtures("graph_mode")


@pytest.fixture(scope="module")
def net():
    ms.set_seed(0)
    return LlamaForCausalLM(LlamaConfig(**TINY))


def tokens(shape, seed=0, vocab=64):
    return np.random.default_rng(seed).integers(0, vocab, shape).astype(np.int32)


def np_llama_logits(net, ids):
    """Pure-numpy Llama forward in float64 (Hugging Face semantics) from the net's parameters."""
    cfg = net.config
    p = {name: param.asnumpy().astype(np.float64) for name, param in net.parameters_and_names()}
    nh, nkv, hs = cfg.num_heads, cfg.n_kv_heads, cfg.head_dim
    B, T = ids.shape

    def rms(x, w):
        return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + cfg.rms_norm_eps) * w

    inv_freq = 1.0 / cfg.theta ** (np.arange(0, hs, 2) / hs)
    angles = np.outer(np.arange(T), inv_freq)
    cos, sin = np.cos(np.concatenate([angles] * 2, -1)), np.sin(np.concatenate([angles] * 2, -1))

    def rope(t):
        return t * cos + np.concatenate([-t[..., hs // 2:], t[..., :hs // 2]], -1) * sin

    x = p["model.embed_tokens.weight"][ids]
    for i in range(cfg.num_layers):
        w = {k[len(f"model.layers.{i}."):]: v for k, v in p.items() if k.startswith(f"model.layers.{i}.")}
        h = rms(x, w["input_layernorm.weight"])
        q = (h @ w["self_attn.q_proj.weight"].T).reshape(B, T, nh, hs).transpose(0, 2, 1, 3)
        k = (h @ w["self_attn.k_proj.weight"].T).reshape(B, T, nkv, hs).transpose(0, 2, 1, 3)
        v = (h @ w["self_attn.v_proj.weight"].T).reshape(B, T, nkv, hs).transpose(0, 2, 1, 3)
        q, k = rope(q), np.repeat(rope(k), nh // nkv, 1)
        v = np.repeat(v, nh // nkv, 1)
        att = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hs) + np.triu(np.full((T, T), -np.inf), 1)
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        x = x + (att @ v).transpose(0, 2, 1, 3).reshape(B, T, nh * hs) @ w["self_attn.o_proj.weight"].T
        h = rms(x, w["post_attention_layernorm.weight"])
        g = h @ w["mlp.gate_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * (h @ w["mlp.up_proj.weight"].T)) @ w["mlp.down_proj.weight"].T
    head = p["model.embed_tokens.weight"] if cfg.tie_word_embeddings else p["lm_head.weight"]
    return rms(x, p["model.norm.weight"]) @ head.T


def np_cross_entropy(logits, targets, ignore=-100):
    logits = logits.reshape(-1, logits.shape[-1]).astype(np.float64)
    targets = targets.reshape(-1)
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    keep = targets != ignore
    return -logp[keep, targets[keep]].mean()


def test_parameter_names_map_onto_hugging_face(net):
    per_layer = ["input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
                 "self_attn.v_proj.weight", "self_attn.o_proj.weight", "post_attention_layernorm.weight",
                 "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"]
    expected = ["model.embed_tokens.weight"] + [f"model.layers.{i}.{n}" for i in range(2) for n in per_layer] \
        + ["model.norm.weight", "lm_head.weight"]
    names = [name for name, _ in net.parameters_and_names()]
    assert sorted(names) == sorted(expected)
    # Parameter.name is what checkpoints store: it must be the same path.
    assert all(param.name == name for name, param in net.parameters_and_names())
    shapes = dict((name, param.shape) for name, param in net.parameters_and_names())
    assert shapes["model.layers.0.self_attn.k_proj.weight"] == (16, 32)  # (out, in), like torch Linear
    assert shapes["model.layers.0.mlp.down_proj.weight"] == (32, 88)


def test_registered_and_built_from_config():
    assert MindFormerRegister.get_cls(MindFormerModuleType.MODELS, "LlamaForCausalLM") is LlamaForCausalLM
    config = build_from_config({"type": "LlamaConfig", **TINY}, MindFormerModuleType.CONFIG)
    model = build_from_config({"type": "LlamaForCausalLM"}, MindFormerModuleType.MODELS, config=config)
    assert model.config is config


def test_init_is_seeded_normal_and_norms_are_ones():
    ms.set_seed(5)
    a = LlamaForCausalLM(LlamaConfig(**{**TINY, "initializer_range": 0.02}))
    ms.set_seed(5)
    b = LlamaForCausalLM(LlamaConfig(**{**TINY, "initializer_range": 0.02}))
    for (name, pa), (_, pb) in zip(a.parameters_and_names(), b.parameters_and_names()):
        np.testing.assert_array_equal(pa.asnumpy(), pb.asnumpy(), err_msg=name)
    np.testing.assert_array_equal(a.model.norm.weight.asnumpy(), np.ones(32, np.float32))
    assert abs(a.model.embed_tokens.weight.asnumpy().std() - 0.02) < 0.002


def test_num_params_matches_parameter_sizes(net):
    assert net.num_params() == net.config.num_params() == sum(p.size for p in net.get_parameters())
    assert net.num_params(exclude_embeddings=True) == net.config.num_params(exclude_embeddings=True)
    tied = LlamaForCausalLM(LlamaConfig(**TINY, tie_word_embeddings=True, qkv_has_bias=True))
    assert "lm_head.weight" not in dict(tied.parameters_and_names())
    assert tied.num_params() == tied.config.num_params() == sum(p.size for p in tied.get_parameters())
    assert tied.flops_per_token() == tied.config.flops_per_token()


def test_logits_match_numpy_forward(net):
    ids = tokens((2, 16))
    logits = net(Tensor(ids)).asnumpy()
    assert logits.shape == (2, 16, 64) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, np_llama_logits(net, ids), atol=1e-5, rtol=0)


def test_tied_embeddings_match_numpy_forward():
    ms.set_seed(1)
    tied = LlamaForCausalLM(LlamaConfig(**{**TINY, "tie_word_embeddings": True, "n_kv_heads": 1}))
    ids = tokens((1, 9), seed=1)
    np.testing.assert_allclose(tied(Tensor(ids)).asnumpy(), np_llama_logits(tied, ids), atol=1e-5, rtol=0)



def test_training_loss_is_masked_cross_entropy(net):
    ids = tokens((2, 17), seed=3)
    labels = ids.copy()
    labels[0, :6] = -100  # a masked prompt
    labels[1, 12] = -100
    logits = np_llama_logits(net, ids[:, :-1])
    net.set_train(True)
    try:
        loss = net(Tensor(ids)).asnumpy()
        masked = net(Tensor(ids), Tensor(labels)).asnumpy()
    finally:
        net.set_train(False)
    assert loss.shape == () and loss.dtype == np.float32
    np.testing.assert_allclose(loss, np_cross_entropy(logits, ids[:, 1:]), rtol=1e-5)
    np.testing.assert_allclose(masked, np_cross_entropy(logits, labels[:, 1:]), rtol=1e-5)
    # After switching back the inference graph is used again.
    assert net(Tensor(ids[:, :-1])).shape == (2, 16, 64)



def test_bfloat16_on_cpu_falls_back_to_float32_with_one_notice(caplog):
    with caplog.at_level(logging.WARNING):
        net = LlamaForCausalLM(LlamaConfig(**TINY, compute_dtype="bfloat16", param_init_type="bfloat16"))
    notices = [r.getMessage() for r in caplog.records if "bfloat16" in r.getMessage()]
    assert len(notices) == 1 and "compute_dtype, param_init_type" in notices[0] and "float32" in notices[0]
    assert net.config.compute_dtype == net.config.param_init_type == "float32"
    assert all(p.dtype == ms.float32 for p in net.get_parameters())


def test_float16_on_cpu_warns_and_runs(caplog):
    with caplog.at_level(logging.WARNING):
        half = LlamaForCausalLM(LlamaConfig(**TINY, compute_dtype="float16"))
    assert "compute_dtype = float16 on CPU" in caplog.text
    logits = half(Tensor(tokens((1, 8)))).asnumpy()
    assert logits.dtype == np.float32 and np.isfinite(logits).all()


def test_flash_attention_on_cpu_is_an_error():
    with pytest.raises(ValueError, match="use_flash_attention=True needs an Ascend device"):
        LlamaForCausalLM(LlamaConfig(**TINY, use_flash_attention=True))


def test_input_longer_than_max_position_is_an_error(net, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a failed graph compile writes rank_0/om/analyze_fail.ir to the cwd
    with pytest.raises(ValueError, match="input has 17 tokens but model_config.max_position_embedding is 16"):
        net(Tensor(tokens((1, 17))))


def test_select_recompute_is_refused():
    with pytest.raises(ValueError, match="select_recompute"):
        LlamaForCausalLM(LlamaConfig(**TINY, recompute_config={"select_recompute": True}))


def test_checkpoint_name_or_path_loads_weights(net, tmp_path):
    path = str(tmp_path / "tiny.safetensors")
    ms.save_checkpoint(net, path, format="safetensors")
    ms.set_seed(9)
    loaded = LlamaForCausalLM(LlamaConfig(**TINY, checkpoint_name_or_path=path))
    for (name, a), (_, b) in zip(net.parameters_and_names(), loaded.parameters_and_names()):
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy(), err_msg=name)
    with pytest.raises(ValueError, match="checkpoint_name_or_path 'llama2_7b' is not a file"):
        LlamaForCausalLM(LlamaConfig(**TINY, checkpoint_name_or_path="llama2_7b"))
