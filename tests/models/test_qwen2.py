"""Qwen2 / Qwen2.5: Llama decoder with qkv biases — names, numerics, causality, training, shipped configs."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from family_checks import build_from_yaml, check_names, np_logits, tokens
from mindformers.models import Qwen2Config, Qwen2ForCausalLM

TINY = dict(seq_length=16, hidden_size=32, num_layers=2, num_heads=4, n_kv_heads=2, vocab_size=64,
            intermediate_size=48, initializer_range=0.1)

pytestmark = pytest.mark.usefixtures("graph_mode")


@pytest.fixture(scope="module")
def net():
    ms.set_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**TINY))
    for name, param in model.parameters_and_names():  # biases start at zero: make them matter
        if name.endswith(".bias"):
            param.set_data(Tensor(np.random.default_rng(1).normal(0, 0.1, param.shape).astype(np.float32)))
    return model


def test_defaults_are_qwen2s():
    config = Qwen2Config(**TINY)
    assert config.qkv_has_bias and config.theta == 1e6 and config.rms_norm_eps == 1e-6
    assert Qwen2Config(**config.to_dict()).to_dict() == config.to_dict()


def test_hugging_face_names(net):
    attn = [f"self_attn.{p}_proj.{kind}" for p in "qkv" for kind in ("weight", "bias")]
    check_names(net, ["input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.o_proj.weight",
                      "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"] + attn)


def test_logits_match_numpy_forward(net):
    ids = tokens((2, 16))
    np.testing.assert_allclose(net(Tensor(ids)).asnumpy(), np_logits(net, ids), atol=1e-5, rtol=0)






def test_qwen2_5_7b_config_has_published_size():
    config, arch = build_from_yaml("qwen2/predict_qwen2_5_7b.yaml")
    assert arch == "Qwen2ForCausalLM"
    assert config.num_params() == 7_615_616_512  # "7.61B" on the model card
    non_embedding = config.num_params() - 2 * config.vocab_size * config.hidden_size
    assert round(non_embedding / 1e9, 2) == 6.53  # "Number of Parameters (Non-Embedding): 6.53B"
