"""MoE layer: router top-k picks, load-balancing loss on hand-computable cases, dense vs per-expert loop."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from mindformers.modules import MoE, load_balancing_loss, route

pytestmark = pytest.mark.usefixtures("pynative_mode")


def test_router_picks_top_k_and_renormalizes():
    logits = Tensor(np.log(np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]], np.float32)))
    combine, probs, chosen = route(logits, 2, norm_topk_prob=True)
    np.testing.assert_allclose(probs.asnumpy(), [[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]], atol=1e-6)
    np.testing.assert_allclose(combine.asnumpy(), [[0, 0.6 / 0.9, 0.3 / 0.9], [0.5 / 0.8, 0, 0.3 / 0.8]], atol=1e-6)
    assert chosen.shape == (2, 2, 3)
    raw, _, _ = route(logits, 2, norm_topk_prob=False)
    np.testing.assert_allclose(raw.asnumpy(), [[0, 0.6, 0.3], [0.5, 0, 0.3]], atol=1e-6)


def test_load_balancing_loss_by_hand():
    # Both tokens pick expert 0 (top-1): f = [1, 0], P = [0.75, 0.25] -> 2 * (1 * 0.75) = 1.5.
    _, probs, chosen = route(Tensor(np.log(np.array([[0.75, 0.25], [0.75, 0.25]], np.float32))), 1, True)
    np.testing.assert_allclose(load_balancing_loss(probs, chosen).asnumpy(), 1.5, rtol=1e-6)
    # One token each, mirrored probabilities: f = P = [0.5, 0.5] -> 2 * 0.5 = 1, the balanced minimum.
    _, probs, chosen = route(Tensor(np.log(np.array([[0.75, 0.25], [0.25, 0.75]], np.float32))), 1, True)
    np.testing.assert_allclose(load_balancing_loss(probs, chosen).asnumpy(), 1.0, rtol=1e-6)
    # Top-2 of 2 experts: every token picks both, f = [1, 1] -> 2 * (P0 + P1) = 2 = k.
    _, probs, chosen = route(Tensor(np.log(np.array([[0.9, 0.1], [0.6, 0.4]], np.float32))), 2, True)
    np.testing.assert_allclose(load_balancing_loss(probs, chosen).asnumpy(), 2.0, rtol=1e-6)


@pytest.mark.parametrize("norm_topk_prob", [True, False])
def test_dense_equals_loop_over_experts(norm_topk_prob):
    ms.set_seed(0)
    moe = MoE(hidden_size=16, ffn_size=8, num_experts=4, top_k=2, norm_topk_prob=norm_topk_prob, init_std=0.3)
    x = Tensor(np.random.default_rng(0).standard_normal((2, 5, 16)).astype(np.float32))
    y, aux = moe.with_aux_loss(x)
    assert y.shape == (2, 5, 16) and aux.shape == ()
    combine, probs, chosen = route(moe.gate(x.reshape(10, 16)), 2, norm_topk_prob)
    loop = sum(combine[:, e:e + 1].asnumpy() * moe.experts[e](x.reshape(10, 16)).asnumpy() for e in range(4))
    np.testing.assert_allclose(y.asnumpy().reshape(10, 16), loop, atol=1e-5)
    np.testing.assert_allclose(aux.asnumpy(), load_balancing_loss(probs, chosen).asnumpy(), rtol=1e-6)
    np.testing.assert_array_equal(moe(x).asnumpy(), y.asnumpy())
    # Each token used exactly two experts.
    assert ((combine.asnumpy() > 0).sum(-1) == 2).all()


def test_expert_names_follow_the_family():
    names = [n for n, _ in MoE(8, 4, 2, 1, expert_names=("w1", "w3", "w2")).parameters_and_names()]
    assert names == ["gate.weight", "experts.0.w1.weight", "experts.0.w3.weight", "experts.0.w2.weight",
                     "experts.1.w1.weight", "experts.1.w3.weight", "experts.1.w2.weight"]


def test_top_k_out_of_range_is_an_error():
    with pytest.raises(ValueError, match="num_experts_per_tok must be in \\[1, num_experts=4\\], got 5"):
        MoE(8, 4, 4, 5)
