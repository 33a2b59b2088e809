"""Qwen3-MoE: qk-norm attention with MoE blocks under `mlp` — names, numerics, aux loss, training, sizes."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from family_checks import build_from_yaml, check_names, \
    np_cross_entropy, np_logits, tokens
from mindformers.models import Qwen3MoeConfig, Qwen3MoeForCausalLM

TINY = dict(seq_length=16, hidden_size=32, num_layers=2, num_heads=4, n_kv_heads=2, head_dim=16, vocab_size=64,
            intermediate_size=64, moe_intermediate_size=16, num_experts=8, num_experts_per_tok=2,
            norm_topk_prob=False, initializer_range=0.1)

pytestmark = pytest.mark.usefixtures("graph_mode")


@pytest.fixture(scope="module")
def net():
    ms.set_seed(0)
    return Qwen3MoeForCausalLM(Qwen3MoeConfig(**TINY))


def test_config_combines_qwen3_and_moe_keys():
    config = Qwen3MoeConfig(**TINY)
    assert config.head_dim == 16 and config.qk_norm and config.expert_ffn_size == 16
    assert config.router_aux_loss_coef == 0.001
    assert Qwen3MoeConfig(**config.to_dict()).to_dict() == config.to_dict()


def test_hugging_face_names(net):
    experts = [f"mlp.experts.{e}.{n}.weight" for e in range(8) for n in ("gate_proj", "up_proj", "down_proj")]
    check_names(net, ["input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.q_proj.weight",
                      "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
                      "self_attn.q_norm.weight", "self_attn.k_norm.weight", "mlp.gate.weight"] + experts)


def test_logits_and_loss_match_numpy(net):
    ids = tokens((2, 13))
    np.testing.assert_allclose(net(Tensor(ids[:, :-1])).asnumpy(), np_logits(net, ids[:, :-1]), atol=1e-5, rtol=0)
    logits, aux = np_logits(net, ids[:, :-1], with_aux=True)
    net.set_train(True)
    try:
        loss = float(net(Tensor(ids)).asnumpy())
    finally:
        net.set_train(False)
    np.testing.assert_allclose(loss, np_cross_entropy(logits, ids[:, 1:]) + 0.001 * aux, rtol=1e-5)






def test_qwen3_30b_a3b_config_has_published_size():
    config, arch = build_from_yaml("qwen3_moe/predict_qwen3_30b_a3b.yaml")
    assert arch == "Qwen3MoeForCausalLM"
    assert round(config.num_params() / 1e9, 1) == 30.5  # model card: 30.5B total, 3.3B activated
    assert abs(config.num_active_params() / 1e9 - 3.3) < 0.06  # we count 3.35B
