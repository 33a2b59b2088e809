"""Qwen3: Llama decoder with qk-norm and an explicit head_dim — names, numerics, causality, training, configs."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from family_checks import build_from_yaml, check_names, np_logits, tokens
from mindformers.models import Qwen3Config, Qwen3ForCausalLM

# head_dim 16 with 4 heads: attention is 64 wide while the residual stream is 32, as in Qwen3-0.6B.
TINY = dict(seq_length=16, hidden_size=32, num_layers=2, num_heads=4, n_kv_heads=2, head_dim=16, vocab_size=64,
            intermediate_size=48, initializer_range=0.1)

pytestmark = pytest.mark.usefixtures("graph_mode")


@pytest.fixture(scope="module")
def net():
    ms.set_seed(0)
    model = Qwen3ForCausalLM(Qwen3Config(**TINY))
    for name, param in model.parameters_and_names():  # norm weights start at one: make qk-norm's matter
        if name.endswith("_norm.weight"):
            param.set_data(Tensor(np.random.default_rng(1).uniform(0.5, 1.5, param.shape).astype(np.float32)))
    return model


def test_config_keys_and_defaults():
    config = Qwen3Config(**TINY)
    assert config.head_dim == 16 and config.qk_norm and not config.qkv_has_bias and config.theta == 1e6
    assert Qwen3Config(**{**TINY, "head_dim": None}).head_dim == 8
    assert Qwen3Config(**config.to_dict()).to_dict() == config.to_dict()
    with pytest.raises(ValueError, match="model_config.head_dim must be a positive int"):
        Qwen3Config(**{**TINY, "head_dim": 0})


def test_hugging_face_names_and_shapes(net):
    check_names(net, ["input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.q_proj.weight",
                      "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
                      "self_attn.q_norm.weight", "self_attn.k_norm.weight",
                      "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"])
    shapes = {name: p.shape for name, p in net.parameters_and_names()}
    assert shapes["model.layers.0.self_attn.q_proj.weight"] == (64, 32)
    assert shapes["model.layers.0.self_attn.o_proj.weight"] == (32, 64)
    assert shapes["model.layers.0.self_attn.q_norm.weight"] == (16,)


def test_logits_match_numpy_forward(net):
    ids = tokens((2, 16))
    np.testing.assert_allclose(net(Tensor(ids)).asnumpy(), np_logits(net, ids), atol=1e-5, rtol=0)






@pytest.mark.parametrize("path, total, non_embedding", [
    ("qwen3/predict_qwen3_0_6b.yaml", 0.6, 0.44),  # model card: 0.6B, non-embedding 0.44B
    ("qwen3/predict_qwen3_8b.yaml", 8.2, 6.95),  # model card: 8.2B, non-embedding 6.95B
])
def test_real_size_configs_have_published_sizes(path, total, non_embedding):
    config, arch = build_from_yaml(path)
    assert arch == "Qwen3ForCausalLM"
    n = config.num_params()
    embeddings = config.vocab_size * config.hidden_size * (1 if config.tie_word_embeddings else 2)
    assert round(n / 1e9, 1) == total and round((n - embeddings) / 1e9, 2) == non_embedding
    assert n == {"qwen3/predict_qwen3_0_6b.yaml": 596_049_920, "qwen3/predict_qwen3_8b.yaml": 8_190_735_360}[path]
