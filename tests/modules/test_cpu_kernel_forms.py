"""The faster CPU forms (tiled broadcasts, 2-D row reductions, closed-form softmax and cross-entropy backwards)
compute what the plain MindSpore ops compute, forward and backward, in GRAPH mode."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn, ops

from mindformers.models.base import causal_lm_loss
from mindformers.modules.attention import Softmax
from mindformers.modules.layers import broadcast, row_reduce

pytestmark = pytest.mark.usefixtures("graph_mode")


class Broadcast(nn.Cell):
    def __init__(self, shape):
        super().__init__()
        self.shape = shape

    def construct(self, t):
        return broadcast(t, self.shape)


class RowReduce(nn.Cell):
    def __init__(self, mean: bool):
        super().__init__()
        self.mean = mean

    def construct(self, t):
        return row_reduce(t, ops.mean) if self.mean else row_reduce(t)


class WeightedSoftmax(nn.Cell):
    def __init__(self, ours: bool):
        super().__init__()
        self.ours = ours
        self.softmax = Softmax()

    def construct(self, t, u):
        return ((self.softmax(t) if self.ours else ops.softmax(t, -1)) * u).sum()


class Loss(nn.Cell):
    """causal_lm_loss, or the same loss as autodiff of gather(log_softmax) (`ours` False)."""

    def __init__(self, ours: bool):
        super().__init__()
        self.ours = ours

    def construct(self, x, t):
        if self.ours:
            return causal_lm_loss(x, t, -100)
        x, t = x.reshape(-1, x.shape[-1]), t.reshape(-1, 1)
        keep = ops.cast(t != -100, ms.float32)
        nll = -ops.gather_elements(ops.log_softmax(x, -1), 1, ops.cast(t * ops.cast(t != -100, t.dtype), ms.int32))
        return (nll * keep).sum() / keep.sum()


@pytest.mark.parametrize("src, dst", [((3, 1), (3, 5)), ((5,), (2, 3, 5)), ((1, 1, 4, 4), (2, 3, 4, 4)),
                                      ((2, 1, 3, 1), (2, 4, 3, 5))])
def test_broadcast_equals_numpy_broadcast(src, dst):
    x = np.random.default_rng(0).normal(size=src).astype(np.float32)
    out = Broadcast(dst)(Tensor(x)).asnumpy()
    np.testing.assert_array_equal(out, np.broadcast_to(x, dst))


@pytest.mark.parametrize("mean, ref", [(False, np.sum), (True, np.mean)])
def test_row_reduce_keeps_the_last_axis(mean, ref):
    x = np.random.default_rng(1).normal(size=(2, 3, 4, 7)).astype(np.float32)
    out = RowReduce(mean)(Tensor(x)).asnumpy()
    assert out.shape == (2, 3, 4, 1)
    np.testing.assert_allclose(out, ref(x, -1, keepdims=True), rtol=1e-6, atol=1e-6)


def test_softmax_cell_backward_equals_the_plain_softmax_backward():
    x = Tensor(np.random.default_rng(2).normal(size=(2, 3, 4, 6)).astype(np.float32))
    w = Tensor(np.random.default_rng(3).normal(size=(2, 3, 4, 6)).astype(np.float32))
    ours = ms.grad(WeightedSoftmax(True))(x, w).asnumpy()
    plain = ms.grad(WeightedSoftmax(False))(x, w).asnumpy()
    np.testing.assert_allclose(ours, plain, atol=1e-6)


def test_cross_entropy_value_and_gradient_equal_log_softmax_autodiff():
    rng = np.random.default_rng(4)
    logits = Tensor((rng.normal(size=(2, 5, 11)) * 3).astype(np.float32))
    targets = rng.integers(0, 11, (2, 5)).astype(np.int32)
    targets[0, 1] = targets[1, 4] = -100  # ignored positions get no gradient
    targets = Tensor(targets)
    ours_net, plain_net = Loss(True), Loss(False)
    np.testing.assert_allclose(ours_net(logits, targets).asnumpy(), plain_net(logits, targets).asnumpy(), rtol=1e-6)
    ours = ms.grad(ours_net)(logits, targets).asnumpy()
    np.testing.assert_allclose(ours, ms.grad(plain_net)(logits, targets).asnumpy(), atol=1e-6)
    assert np.abs(ours[0, 1]).max() == 0 and np.abs(ours[1, 4]).max() == 0
