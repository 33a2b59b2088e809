"""LR schedules: values against closed-form formulas, in a compiled graph and eagerly, plus config errors."""
import math

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from mindformers.core.lr import (ConstantWarmUpLR, CosineWithRestartsAndWarmUpLR, CosineWithWarmUpLR,
                                 LinearWithWarmUpLR, PolynomialWithWarmUpLR, WarmUpStableDecayLR)
from mindformers.tools.register import MindFormerModuleType, build_from_config

pytestmark = pytest.mark.usefixtures("graph_mode")
ms.set_device("CPU")

LR, LR_INIT, WARMUP, TOTAL = 0.005, 0.001, 10, 30
STEPS = [0, 1, 5, 9, 10, 11, 17, 25, 29, 30, 40]


def warm(t):
    return LR_INIT + (LR - LR_INIT) * t / WARMUP


def expected_linear(t):
    return warm(t) if t < WARMUP else LR - LR * min((t - WARMUP) / (TOTAL - WARMUP), 1.0)


def expected_cosine(t):
    if t < WARMUP:
        return warm(t)
    p = min((t - WARMUP) / (TOTAL - WARMUP), 1.0)
    return 1e-4 + (LR - 1e-4) * 0.5 * (1 + math.cos(math.pi * p))


def expected_restarts(t):
    if t < WARMUP:
        return warm(t)
    p = (t - WARMUP) / (TOTAL - WARMUP)
    return 0.0 if p >= 1 else LR * 0.5 * (1 + math.cos(math.pi * ((2 * p) % 1.0)))


def expected_poly(t):
    if t < WARMUP:
        return warm(t)
    p = min((t - WARMUP) / (TOTAL - WARMUP), 1.0)
    return 1e-7 + (LR - 1e-7) * (1 - p) ** 2


def expected_wsd(t):
    if t < WARMUP:
        return warm(t)
    return LR - (LR - 1e-6) * min(max(t - 20, 0) / (TOTAL - 20), 1.0)


CASES = [
    (ConstantWarmUpLR(LR, warmup_steps=WARMUP, warmup_lr_init=LR_INIT), lambda t: warm(t) if t < WARMUP else LR),
    (LinearWithWarmUpLR(LR, total_steps=TOTAL, warmup_steps=WARMUP, warmup_lr_init=LR_INIT), expected_linear),
    (CosineWithWarmUpLR(LR, warmup_steps=WARMUP, total_steps=TOTAL, lr_end=1e-4, warmup_lr_init=LR_INIT),
     expected_cosine),
    (CosineWithRestartsAndWarmUpLR(LR, warmup_steps=WARMUP, total_steps=TOTAL, num_cycles=2,
                                   warmup_lr_init=LR_INIT), expected_restarts),
    (PolynomialWithWarmUpLR(LR, total_steps=TOTAL, warmup_steps=WARMUP, power=2.0, warmup_lr_init=LR_INIT),
     expected_poly),
    (WarmUpStableDecayLR(LR, lr_end=1e-6, warmup_steps=WARMUP, warmup_lr_init=LR_INIT, total_steps=TOTAL,
                         decay_start_steps=20), expected_wsd),
]


@pytest.mark.parametrize("schedule, expected", CASES, ids=lambda c: type(c).__name__)
def test_schedule_matches_closed_form(schedule, expected):
    want = np.array([expected(t) for t in STEPS])
    graph = np.array([schedule(Tensor([t], ms.int32)).asnumpy() for t in STEPS]).reshape(-1)
    eager = np.array([schedule.value(t) for t in STEPS])
    np.testing.assert_allclose(graph, want, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(eager, want, rtol=1e-5, atol=1e-9)


def test_warmup_ratio_is_a_fraction_of_total_steps():
    lr = CosineWithWarmUpLR(1.0, warmup_ratio=0.1, total_steps=50)
    assert lr.warmup_steps == 5
    assert lr.value(1) == pytest.approx(0.2)
    assert lr.value(5) == pytest.approx(1.0)


def test_cosine_decay_ratio_sets_decay_length_then_holds_lr_end():
    lr = CosineWithWarmUpLR(1.0, warmup_steps=0, total_steps=100, decay_ratio=0.5, lr_end=0.1)
    assert lr.decay_steps == 50
    assert lr.value(25) == pytest.approx(0.55, rel=1e-5)
    assert lr.value(50) == pytest.approx(0.1, rel=1e-5)
    assert lr.value(90) == pytest.approx(0.1, rel=1e-5)


def test_wsd_decay_start_ratio():
    lr = WarmUpStableDecayLR(1.0, lr_end=0.0, warmup_steps=2, total_steps=10, decay_start_ratio=0.6)
    assert lr.decay_start_steps == 6
    assert [round(lr.value(t), 5) for t in (1, 3, 6, 8, 10)] == [0.5, 1.0, 1.0, 0.5, 0.0]


def test_built_from_yaml_config():
    cfg = {"type": "CosineWithWarmUpLR", "learning_rate": 1e-3, "warmup_ratio": 0.01, "total_steps": 1000,
           "lr_end": 1e-5}
    lr = build_from_config(cfg, MindFormerModuleType.LR)
    assert isinstance(lr, CosineWithWarmUpLR)
    assert lr.warmup_steps == 10
    with pytest.raises(TypeError, match="warmup_step"):
        build_from_config({"type": "LinearWithWarmUpLR", "learning_rate": 1e-3, "total_steps": 10,
                           "warmup_step": 1}, MindFormerModuleType.LR)


def test_warmup_steps_and_ratio_together_is_an_error():
    with pytest.raises(ValueError, match="warmup_steps.*warmup_ratio"):
        LinearWithWarmUpLR(1e-3, total_steps=100, warmup_steps=5, warmup_ratio=0.1)


@pytest.mark.parametrize("total_steps", [None, -1])
@pytest.mark.parametrize("cls", [LinearWithWarmUpLR, CosineWithWarmUpLR, CosineWithRestartsAndWarmUpLR,
                                 PolynomialWithWarmUpLR])
def test_decaying_schedule_needs_resolved_total_steps(cls, total_steps):
    with pytest.raises(ValueError, match="total_steps"):
        cls(learning_rate=1e-3, total_steps=total_steps, warmup_steps=2)


def test_warmup_ratio_needs_total_steps():
    with pytest.raises(ValueError, match="total_steps is -1"):
        ConstantWarmUpLR(1e-3, warmup_ratio=0.1, total_steps=-1)


def test_wsd_config_errors():
    with pytest.raises(ValueError, match="decay_start_steps or decay_start_ratio"):
        WarmUpStableDecayLR(1e-3, total_steps=100)
    with pytest.raises(ValueError, match="lr_end"):
        WarmUpStableDecayLR(1e-3, lr_end=1e-3, total_steps=100, decay_start_steps=50)
    with pytest.raises(ValueError, match="decay must start"):
        WarmUpStableDecayLR(1e-3, warmup_steps=20, total_steps=100, decay_start_steps=10)


def test_decay_shorter_than_warmup_is_an_error():
    with pytest.raises(ValueError, match="decay phase"):
        CosineWithWarmUpLR(1e-3, warmup_steps=100, total_steps=100)
