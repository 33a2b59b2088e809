"""MFTrainOneStepCell on a tiny Dense regressor in GRAPH mode."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn, ops

from mindformers.core.lr import LinearWithWarmUpLR
from mindformers.core.optim import AdamW
from mindformers.tools.register import MindFormerModuleType, build_from_config
from mindformers.wrapper import DynamicLossScaleUpdateCell, FixedLossScaleUpdateCell, MFTrainOneStepCell

pytestmark = pytest.mark.usefixtures("graph_mode")
ms.set_device("CPU")

RNG = np.random.default_rng(0)
W1, B1 = RNG.standard_normal((8, 4)).astype(np.float32) * 0.5, np.zeros(8, np.float32)
W2, B2 = RNG.standard_normal((1, 8)).astype(np.float32) * 0.5, np.zeros(1, np.float32)
X = Tensor(RNG.standard_normal((8, 4)).astype(np.float32))
Y = Tensor(RNG.standard_normal((8, 1)).astype(np.float32))
X_NAN = Tensor(np.full((8, 4), np.nan, np.float32))


class Regressor(nn.Cell):
    """Two Dense layers with fixed initial weights and a mean-squared-error loss."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Dense(4, 8, weight_init=Tensor(W1), bias_init=Tensor(B1))
        self.fc2 = nn.Dense(8, 1, weight_init=Tensor(W2), bias_init=Tensor(B2))

    def construct(self, x, y):
        return ((self.fc2(ops.tanh(self.fc1(x))) - y) ** 2).mean()


def make_cell(optimizer=None, lr=1e-2, **kwargs):
    net = Regressor()
    optimizer = optimizer or AdamW
    return MFTrainOneStepCell(net, optimizer(net.trainable_params(), learning_rate=lr), **kwargs)


def snapshot(cell):
    return {p.name: p.asnumpy().copy() for p in cell.get_parameters()}


def net_weights(cell):
    return np.concatenate([p.asnumpy().reshape(-1) for p in cell.network.trainable_params()])


def test_loss_falls_and_outputs_are_tensors():
    cell = make_cell()
    losses = []
    for _ in range(30):
        loss, overflow, scale, norm = cell(X, Y)
        assert not overflow.asnumpy() and float(scale.asnumpy()) == 1.0 and float(norm.asnumpy()) > 0
        losses.append(float(loss.asnumpy()))
    assert losses[-1] < 0.5 * losses[0]


def test_clipping_bounds_the_update_norm():
    # With SGD at lr 1 the update is exactly the (clipped) gradient.
    free, clipped = make_cell(nn.SGD, lr=1.0), make_cell(nn.SGD, lr=1.0, use_clip_grad=True, max_grad_norm=0.01)
    w0 = net_weights(free)
    _, _, _, norm = free(X, Y)
    _, _, _, clipped_norm = clipped(X, Y)
    assert float(norm.asnumpy()) > 0.1
    assert float(clipped_norm.asnumpy()) == pytest.approx(float(norm.asnumpy()), rel=1e-6)
    assert np.linalg.norm(net_weights(free) - w0) == pytest.approx(float(norm.asnumpy()), rel=1e-4)
    assert np.linalg.norm(net_weights(clipped) - w0) == pytest.approx(0.01, rel=1e-3)


def test_nan_loss_skips_the_step_and_halves_the_dynamic_scale():
    scaler = DynamicLossScaleUpdateCell(loss_scale_value=1024, scale_factor=2, scale_window=1000)
    cell = make_cell(scale_sense=scaler)
    cell(X, Y)
    before = snapshot(cell)
    loss, overflow, scale, _ = cell(X_NAN, Y)
    assert np.isnan(loss.asnumpy()) and bool(overflow.asnumpy()) and float(scale.asnumpy()) == 1024.0
    after = snapshot(cell)
    assert after.pop("scale_sense") == 512.0 and after.pop("loss_scale_good_steps") == 0
    before.pop("scale_sense"), before.pop("loss_scale_good_steps")
    for name, value in before.items():  # weights, moments and global_step untouched
        np.testing.assert_array_equal(after[name], value, err_msg=name)
    _, overflow, scale, _ = cell(X, Y)
    assert not overflow.asnumpy() and float(scale.asnumpy()) == 512.0
    assert int(cell.optimizer.global_step.asnumpy()[0]) == 2


def test_dynamic_scale_grows_after_a_clean_window():
    cell = make_cell(scale_sense={"type": "DynamicLossScaleUpdateCell", "loss_scale_value": 8,
                                  "scale_factor": 2, "scale_window": 2})
    scales = [float(cell(X, Y)[2].asnumpy()) for _ in range(5)]
    assert scales == [8.0, 8.0, 16.0, 16.0, 32.0]


@pytest.mark.parametrize("scale_sense", [1024.0, {"type": "FixedLossScaleUpdateCell", "loss_scale_value": 4096}])
def test_fixed_scale_gives_the_same_params_as_no_scale(scale_sense):
    plain, scaled = make_cell(), make_cell(scale_sense=scale_sense)
    for _ in range(5):
        loss, _, _, _ = plain(X, Y)
        scaled_loss, _, scale, _ = scaled(X, Y)
        assert float(scaled_loss.asnumpy()) == pytest.approx(float(loss.asnumpy()), abs=1e-6)
    assert isinstance(scaled.loss_scaler, FixedLossScaleUpdateCell) and float(scale.asnumpy()) >= 1024
    assert np.abs(net_weights(plain) - net_weights(scaled)).max() < 1e-6


def test_gradient_accumulation_equals_one_step_on_the_whole_batch():
    whole, accumulated = make_cell(use_clip_grad=True), make_cell(use_clip_grad=True, gradient_accumulation_steps=2)
    for _ in range(3):
        loss, _, _, norm = whole(X, Y)
        acc_loss, _, _, acc_norm = accumulated(X, Y)
        assert float(acc_loss.asnumpy()) == pytest.approx(float(loss.asnumpy()), abs=1e-6)
        assert float(acc_norm.asnumpy()) == pytest.approx(float(norm.asnumpy()), rel=1e-5)
    assert np.abs(net_weights(whole) - net_weights(accumulated)).max() < 1e-6


def test_accumulation_rejects_a_batch_that_does_not_split():
    cell = make_cell(gradient_accumulation_steps=3)
    with pytest.raises((ValueError, RuntimeError), match="gradient_accumulation_steps=3"):
        cell(X, Y)


def test_lr_schedule_advances_with_the_optimizer_global_step():
    net = Regressor()
    schedule = LinearWithWarmUpLR(1e-2, total_steps=10, warmup_steps=2)
    cell = MFTrainOneStepCell(net, AdamW(net.trainable_params(), learning_rate=schedule))
    w0 = net_weights(cell)
    cell(X, Y)  # global step 0: warm-up lr is 0, so nothing moves
    np.testing.assert_array_equal(net_weights(cell), w0)
    for step in range(1, 6):
        cell(X, Y)
        assert int(cell.optimizer.global_step.asnumpy()[0]) == step + 1
    assert np.abs(net_weights(cell) - w0).max() > 1e-3
    assert float(cell.optimizer.get_lr().asnumpy()) == pytest.approx(schedule.value(6))


def test_built_from_runner_wrapper_config():
    net = Regressor()
    cfg = {"type": "MFTrainOneStepCell", "use_clip_grad": True, "max_grad_norm": 1.0,
           "scale_sense": {"type": "DynamicLossScaleUpdateCell", "loss_scale_value": 65536, "scale_factor": 2,
                           "scale_window": 1000}}
    cell = build_from_config(cfg, MindFormerModuleType.WRAPPER, network=net,
                             optimizer=AdamW(net.trainable_params()))
    assert isinstance(cell, MFTrainOneStepCell) and isinstance(cell.loss_scaler, DynamicLossScaleUpdateCell)
    names = {p.name for p in cell.get_parameters()}
    assert {"scale_sense", "loss_scale_good_steps", "global_step", "adam_m.fc1.weight", "fc1.weight"} <= names


@pytest.mark.parametrize("key", ["local_norm", "calculate_per_token_loss", "use_skip_data_by_global_norm",
                                 "print_separate_loss"])
def test_unsupported_upstream_options_name_key_and_device(key):
    with pytest.raises(ValueError, match=f"{key}=True is not supported on CPU"):
        make_cell(**{key: True})


def test_bad_scale_sense_is_an_error():
    with pytest.raises(TypeError, match="scale_sense"):
        make_cell(scale_sense="big")
    with pytest.raises(ValueError, match="loss_scale_value"):
        make_cell(scale_sense=0.5)
