"""Mixtral: MoE Llama — HF names, numerics vs a token-by-token numpy MoE, aux loss in the training loss,
causality, overfitting one batch, published size of Mixtral-8x7B."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from family_checks import build_from_yaml, check_names, np_cross_entropy, np_logits, tokens
from mindformers.models import MixtralConfig, MixtralForCausalLM

TINY = dict(seq_length=16, hidden_size=32, num_layers=2, num_heads=4, n_kv_heads=2, vocab_size=64,
            intermediate_size=24, num_experts=4, num_experts_per_tok=2, initializer_range=0.1,
            router_aux_loss_coef=0.5)
MIXTRAL_NAMES = ("w1", "w3", "w2")

pytestmark = pytest.mark.usefixtures("graph_mode")


@pytest.fixture(scope="module")
def net():
    ms.set_seed(0)
    return MixtralForCausalLM(MixtralConfig(**TINY))


def test_config():
    config = MixtralConfig(**TINY)
    assert config.expert_ffn_size == 24 and config.theta == 1e6
    assert MixtralConfig(**config.to_dict()).to_dict() == config.to_dict()
    with pytest.raises(ValueError, match="num_experts_per_tok \\(5\\) must be <= num_experts \\(4\\)"):
        MixtralConfig(**{**TINY, "num_experts_per_tok": 5})
    with pytest.raises(ValueError, match="router_aux_loss_coef must be a number >= 0"):
        MixtralConfig(**{**TINY, "router_aux_loss_coef": -1})


def test_hugging_face_names(net):
    experts = [f"block_sparse_moe.experts.{e}.{n}.weight" for e in range(4) for n in MIXTRAL_NAMES]
    check_names(net, ["input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.q_proj.weight",
                      "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
                      "block_sparse_moe.gate.weight"] + experts)
    shapes = {name: p.shape for name, p in net.parameters_and_names()}
    assert shapes["model.layers.1.block_sparse_moe.gate.weight"] == (4, 32)
    assert shapes["model.layers.1.block_sparse_moe.experts.3.w2.weight"] == (32, 24)


def test_logits_match_token_by_token_numpy_moe(net):
    ids = tokens((2, 16))
    expected = np_logits(net, ids, "block_sparse_moe", MIXTRAL_NAMES)
    np.testing.assert_allclose(net(Tensor(ids)).asnumpy(), expected, atol=1e-5, rtol=0)


def test_training_loss_adds_weighted_aux_loss(net):
    ids = tokens((2, 17), seed=3)
    logits, aux = np_logits(net, ids[:, :-1], "block_sparse_moe", MIXTRAL_NAMES, with_aux=True)
    net.set_train(True)
    try:
        loss = float(net(Tensor(ids)).asnumpy())
    finally:
        net.set_train(False)
    assert 1.5 < aux < 3.0  # top-2 routing: 2 when perfectly balanced
    np.testing.assert_allclose(loss, np_cross_entropy(logits, ids[:, 1:]) + 0.5 * aux, rtol=1e-5)


def test_recompute_is_refused():
    with pytest.raises(ValueError, match="recompute_config.recompute is not implemented for MoE"):
        MixtralForCausalLM(MixtralConfig(**TINY, recompute_config={"recompute": True}))



def test_active_params_leave_out_unpicked_experts(net):
    c = net.config
    assert c.num_active_params() == c.num_params() - c.num_layers * 2 * 3 * 32 * 24




def test_mixtral_8x7b_config_has_published_size():
    config, arch = build_from_yaml("mixtral/predict_mixtral_8x7b.yaml")
    assert arch == "MixtralForCausalLM"
    assert config.num_params() == 46_702_792_704  # "46.7B total parameters"
    assert round(config.num_active_params() / 1e9, 1) == 12.9  # "12.9B active per token"
