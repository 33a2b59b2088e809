"""LR schedules: values against upstream's closed-form formulas (and torch where it has the schedule), in a
compiled graph and through `value`, upstream's string aliases, grouped_lr_schedule, and config errors."""
import functools
import math
import textwrap

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from mindformers.config import ConfigError, load_config
from mindformers.core.lr import (LR_ALIASES, ConstantWarmUpLR, ConstantWithCoolDownLR, CosineAnnealingLR,
                                 CosineAnnealingWarmRestarts, CosineWithRestartsAndWarmUpLR, CosineWithWarmUpLR,
                                 LinearWithWarmUpLR, PolynomialWithWarmUpLR, WarmUpStableDecayLR,
                                 build_grouped_lr_schedule, build_lr_schedule)
from mindformers.tools.register import MindFormerModuleType, MindFormerRegister, build_from_config
from mindformers.tools.register.register import accepted_kwargs

pytestmark = pytest.mark.usefixtures("graph_mode")
ms.set_device("CPU")

LR, LR_INIT, WARMUP, TOTAL = 0.005, 0.001, 10, 30
STEPS = [0, 1, 5, 9, 10, 11, 17, 25, 29, 30, 40]
LONG_STEPS = list(range(0, 80))


def warm(t):
    return LR_INIT + (LR - LR_INIT) * t / WARMUP


# Upstream 2.1.0's formulas, written out per phase as its construct methods branch.
def up_cosine(t, lr_end=0.0, cycles=0.5, decay_steps=TOTAL):
    if t >= decay_steps:
        return lr_end
    if t < WARMUP:
        return warm(t)
    p = (t - WARMUP) / max(1, TOTAL - WARMUP)
    return lr_end + (LR - lr_end) * max(0.0, 0.5 * (1 + math.cos(math.pi * cycles * 2 * p)))


def up_restarts(t, cycles=1.0, decay_steps=TOTAL):
    if t >= decay_steps:
        return 0.0
    if t < WARMUP:
        return warm(t)
    p = (t - WARMUP) / max(1, TOTAL - WARMUP)
    return LR * 0.5 * (1 + math.cos(math.pi * ((cycles * p) % 1.0))) if p < 1 else 0.0


def up_linear(t):
    return warm(t) if t < WARMUP else LR * max(0.0, (TOTAL - t) / max(1, TOTAL - WARMUP))


def up_poly(t, lr_end=1e-7, power=2.0, decay_steps=TOTAL - WARMUP):
    if t < WARMUP:
        return warm(t)
    if t > TOTAL:
        return lr_end
    return lr_end + (LR - lr_end) * (1 - (t - WARMUP) / decay_steps) ** power


def up_wsd(t, start=20, lr_end=1e-6):
    if t < WARMUP:
        return warm(t)
    if t < start:
        return LR
    return LR - (LR - lr_end) * min(t - start, TOTAL - start) / (TOTAL - start)


def up_cooldown(t, keep=5, decay=10, final=5, end1=0.002, end2=0.001, cycles=0.5):
    if t < WARMUP:
        return warm(t)
    if t < WARMUP + keep:
        return LR
    if t < WARMUP + keep + decay:
        p = (t - keep - WARMUP) / decay
        return end1 + (LR - end1) * max(0.0, 0.5 * (1 + math.cos(math.pi * cycles * 2 * p)))
    return end1 if t < WARMUP + keep + decay + final else end2


def up_annealing(t, base=0.01, t_max=12, eta_min=1e-4):
    return eta_min + (base - eta_min) * 0.5 * (1 + math.cos(math.pi * t / t_max))


def up_warm_restarts(t, base=0.01, t_0=5, t_mult=2, eta_min=1e-4):
    # SGDR stepped one update at a time, as torch's CosineAnnealingWarmRestarts does
    t_cur, t_i = t, t_0
    while t_cur >= t_i:
        t_cur, t_i = t_cur - t_i, t_i * t_mult
    return eta_min + (base - eta_min) * 0.5 * (1 + math.cos(math.pi * t_cur / t_i))


CASES = [
    (ConstantWarmUpLR(LR, warmup_steps=WARMUP, warmup_lr_init=LR_INIT), lambda t: warm(t) if t < WARMUP else LR,
     STEPS),
    (LinearWithWarmUpLR(LR, total_steps=TOTAL, warmup_steps=WARMUP, warmup_lr_init=LR_INIT), up_linear, STEPS),
    (CosineWithWarmUpLR(LR, warmup_steps=WARMUP, total_steps=TOTAL, lr_end=1e-4, warmup_lr_init=LR_INIT),
     lambda t: up_cosine(t, lr_end=1e-4), STEPS),
    # decay_steps cuts the cosine short at step 22 (upstream's meaning), num_cycles bends it
    (CosineWithWarmUpLR(LR, warmup_steps=WARMUP, total_steps=TOTAL, lr_end=1e-4, warmup_lr_init=LR_INIT,
                        decay_steps=22, num_cycles=0.4), lambda t: up_cosine(t, 1e-4, 0.4, 22), LONG_STEPS),
    (CosineWithRestartsAndWarmUpLR(LR, warmup_steps=WARMUP, total_steps=TOTAL, num_cycles=2,
                                   warmup_lr_init=LR_INIT), lambda t: up_restarts(t, 2.0), STEPS),
    # between total_steps and a later decay_steps upstream's rate is 0
    (CosineWithRestartsAndWarmUpLR(LR, warmup_steps=WARMUP, total_steps=TOTAL, num_cycles=3, warmup_lr_init=LR_INIT,
                                   decay_steps=36), lambda t: up_restarts(t, 3.0, 36), LONG_STEPS),
    (PolynomialWithWarmUpLR(LR, total_steps=TOTAL, warmup_steps=WARMUP, power=2.0, warmup_lr_init=LR_INIT),
     up_poly, LONG_STEPS),
    # a decay longer than the run: lr_end from total_steps on
    (PolynomialWithWarmUpLR(LR, total_steps=TOTAL, warmup_steps=WARMUP, power=1.5, warmup_lr_init=LR_INIT,
                            lr_end=1e-4, decay_steps=40), lambda t: up_poly(t, 1e-4, 1.5, 40), LONG_STEPS),
    (WarmUpStableDecayLR(LR, lr_end=1e-6, warmup_steps=WARMUP, warmup_lr_init=LR_INIT, total_steps=TOTAL,
                         decay_start_steps=20), up_wsd, STEPS),
    (ConstantWithCoolDownLR(LR, warmup_steps=WARMUP, warmup_lr_init=LR_INIT, keep_steps=5, decay_steps=10,
                            final_steps=5, lr_end1=0.002, lr_end2=0.001), up_cooldown, LONG_STEPS),
    (ConstantWithCoolDownLR(LR, warmup_steps=WARMUP, warmup_lr_init=LR_INIT, keep_steps=3, decay_ratio=0.4,
                            total_steps=50, num_cycles=0.75, lr_end1=0.001),
     lambda t: up_cooldown(t, keep=3, decay=20, final=0, end1=0.001, end2=0.001, cycles=0.75), LONG_STEPS),
    (CosineAnnealingLR(0.01, t_max=12, eta_min=1e-4), up_annealing, LONG_STEPS),
    (CosineAnnealingWarmRestarts(0.01, t_0=5, t_mult=2, eta_min=1e-4), up_warm_restarts, LONG_STEPS),
    (CosineAnnealingWarmRestarts(0.01, t_0=7, eta_min=1e-4), lambda t: up_warm_restarts(t, t_0=7, t_mult=1),
     LONG_STEPS),
]


@pytest.mark.parametrize("schedule, expected, steps", CASES, ids=lambda c: type(c).__name__)
def test_schedule_matches_upstream_formula(schedule, expected, steps):
    want = np.array([expected(t) for t in steps])
    graph = np.array([schedule(Tensor([t], ms.int32)).asnumpy() for t in steps]).reshape(-1)
    eager = np.array([schedule.value(t) for t in steps])
    np.testing.assert_allclose(graph, want, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(eager, want, rtol=1e-5, atol=1e-9)


def test_upstream_docstring_examples():
    """The values upstream's docstrings print for its own examples."""
    cool = ConstantWithCoolDownLR(0.005, warmup_steps=10, keep_steps=10, decay_steps=10, final_steps=10,
                                  lr_end1=0.002, lr_end2=0.001)
    assert [cool.value(t) for t in (1, 15, 25, 35, 45)] == pytest.approx([5e-4, 5e-3, 3.5e-3, 2e-3, 1e-3], rel=1e-5)
    anneal = CosineAnnealingLR(base_lr=0.005, t_max=10, eta_min=1e-7)
    assert [anneal.value(1), anneal.value(15)] == pytest.approx([0.0048776437, 0.0025000498], rel=1e-5)
    restarts = CosineAnnealingWarmRestarts(base_lr=0.005, t_0=10, t_mult=2, eta_min=1e-7)
    assert [restarts.value(1), restarts.value(15)] == pytest.approx([0.0048776437, 0.0042677815], rel=1e-5)


def test_warm_restarts_restart_exactly_at_cycle_starts():
    lr = CosineAnnealingWarmRestarts(1.0, t_0=3, t_mult=3)
    starts = [0, 3, 12, 39, 120, 363]  # 3 * (3**i - 1) / 2
    assert [lr.value(s) for s in starts] == pytest.approx([1.0] * len(starts))
    assert [lr.value(s - 1) for s in starts[1:]] == pytest.approx(
        [up_warm_restarts(s - 1, 1.0, 3, 3, 0.0) for s in starts[1:]], rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("make_ours, make_torch", [
    (lambda: CosineAnnealingLR(0.1, t_max=7, eta_min=0.01),
     lambda torch, opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=7, eta_min=0.01)),
    (lambda: CosineAnnealingWarmRestarts(0.1, t_0=3, t_mult=2, eta_min=0.01),
     lambda torch, opt: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=3, T_mult=2, eta_min=0.01)),
    (lambda: PolynomialWithWarmUpLR(0.1, total_steps=20, warmup_steps=0, lr_end=0.0, power=2.0),
     lambda torch, opt: torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=20, power=2.0)),
], ids=["CosineAnnealingLR", "CosineAnnealingWarmRestarts", "PolynomialLR"])
def test_matches_torch_scheduler(make_ours, make_torch):
    torch = pytest.importorskip("torch")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = make_torch(torch, opt)
    want = []
    for _ in range(40):
        want.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    ours = make_ours()
    np.testing.assert_allclose([ours.value(t) for t in range(40)], want, rtol=1e-5, atol=1e-8)


# One row per constructor argument: the schedule built from `base` with `change` applied (None removes a key)
# must differ somewhere, so no argument is accepted and then ignored.
BASES = {
    ConstantWarmUpLR: dict(learning_rate=1.0, warmup_steps=10, total_steps=40),
    ConstantWithCoolDownLR: dict(learning_rate=1.0, warmup_steps=10, total_steps=60, keep_steps=5, decay_steps=20,
                                 final_steps=5, lr_end1=0.2, lr_end2=0.1),
    LinearWithWarmUpLR: dict(learning_rate=1.0, total_steps=40, warmup_steps=10),
    CosineWithWarmUpLR: dict(learning_rate=1.0, warmup_steps=10, total_steps=40),
    CosineWithRestartsAndWarmUpLR: dict(learning_rate=1.0, warmup_steps=10, total_steps=40),
    PolynomialWithWarmUpLR: dict(learning_rate=1.0, total_steps=40, warmup_steps=10),
    WarmUpStableDecayLR: dict(learning_rate=1.0, warmup_steps=10, total_steps=40, decay_start_steps=25),
    CosineAnnealingLR: dict(base_lr=1.0, t_max=20),
    CosineAnnealingWarmRestarts: dict(base_lr=1.0, t_0=5),
}
WARMUP_ARGS = {"learning_rate": {"learning_rate": 2.0}, "warmup_steps": {"warmup_steps": 5},
               "warmup_lr_init": {"warmup_lr_init": 0.5}, "warmup_ratio": {"warmup_steps": None, "warmup_ratio": 0.5}}
CHANGES = [(cls, arg, change) for cls in BASES if "learning_rate" in BASES[cls] for arg, change in WARMUP_ARGS.items()
           ] + [
    (ConstantWarmUpLR, "total_steps", {"warmup_steps": None, "warmup_ratio": 0.5, "total_steps": 60}),
    (ConstantWithCoolDownLR, "total_steps", {"decay_steps": None, "total_steps": 30}),
    (ConstantWithCoolDownLR, "keep_steps", {"keep_steps": 8}),
    (ConstantWithCoolDownLR, "decay_steps", {"decay_steps": 10}),
    (ConstantWithCoolDownLR, "decay_ratio", {"decay_steps": None, "decay_ratio": 0.5}),
    (ConstantWithCoolDownLR, "num_cycles", {"num_cycles": 1.0}),
    (ConstantWithCoolDownLR, "lr_end1", {"lr_end1": 0.3}),
    (ConstantWithCoolDownLR, "final_steps", {"final_steps": 9}),
    (ConstantWithCoolDownLR, "lr_end2", {"lr_end2": 0.05}),
    (LinearWithWarmUpLR, "total_steps", {"total_steps": 50}),
    (LinearWithWarmUpLR, "lr_end", {"lr_end": 0.1}),
    (CosineWithWarmUpLR, "total_steps", {"total_steps": 50}),
    (CosineWithWarmUpLR, "num_cycles", {"num_cycles": 1.0}),
    (CosineWithWarmUpLR, "lr_end", {"lr_end": 0.1}),
    (CosineWithWarmUpLR, "decay_steps", {"decay_steps": 30}),
    (CosineWithWarmUpLR, "decay_ratio", {"decay_ratio": 0.5}),
    (CosineWithRestartsAndWarmUpLR, "total_steps", {"total_steps": 50}),
    (CosineWithRestartsAndWarmUpLR, "num_cycles", {"num_cycles": 2.0}),
    (CosineWithRestartsAndWarmUpLR, "lr_end", {"lr_end": 0.1}),
    (CosineWithRestartsAndWarmUpLR, "decay_steps", {"decay_steps": 30}),
    (PolynomialWithWarmUpLR, "total_steps", {"total_steps": 50}),
    (PolynomialWithWarmUpLR, "lr_end", {"lr_end": 0.1}),
    (PolynomialWithWarmUpLR, "power", {"power": 2.0}),
    (PolynomialWithWarmUpLR, "decay_steps", {"decay_steps": 40}),
    (WarmUpStableDecayLR, "lr_end", {"lr_end": 0.1}),
    (WarmUpStableDecayLR, "total_steps", {"total_steps": 50}),
    (WarmUpStableDecayLR, "decay_start_steps", {"decay_start_steps": 30}),
    (WarmUpStableDecayLR, "decay_start_ratio", {"decay_start_steps": None, "decay_start_ratio": 0.5}),
    (CosineAnnealingLR, "base_lr", {"base_lr": 2.0}),
    (CosineAnnealingLR, "t_max", {"t_max": 10}),
    (CosineAnnealingLR, "eta_min", {"eta_min": 0.1}),
    (CosineAnnealingWarmRestarts, "base_lr", {"base_lr": 2.0}),
    (CosineAnnealingWarmRestarts, "t_0", {"t_0": 7}),
    (CosineAnnealingWarmRestarts, "t_mult", {"t_mult": 2}),
    (CosineAnnealingWarmRestarts, "eta_min", {"eta_min": 0.1}),
]
# ConstantWarmUpLR.lr_end is upstream's no-op key: accepted only equal to learning_rate (checked below).
NOT_CHANGING = {(ConstantWarmUpLR, "lr_end")}


@pytest.fixture
def op_by_op():
    """PYNATIVE for one test: a fresh schedule's first values come ~4x faster than compiling its graph."""
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=previous)


def _values(cls, kwargs):
    lr = cls(**{k: v for k, v in kwargs.items() if v is not None})
    return np.array([lr.value(t) for t in (0, 2, 4, 6, 9, 12, 16, 20, 24, 28, 32, 36, 39, 42, 48, 55, 65)])


@functools.lru_cache(maxsize=None)
def _base_values(cls):
    return _values(cls, BASES[cls])


@pytest.mark.usefixtures("op_by_op")
@pytest.mark.parametrize("cls, arg, change", CHANGES, ids=lambda x: x if isinstance(x, str) else None)
def test_every_argument_changes_the_schedule(cls, arg, change):
    base = _base_values(cls)
    changed = _values(cls, {**BASES[cls], **change})
    assert not np.allclose(base, changed, rtol=1e-6, atol=0), f"{cls.__name__}.{arg} left the schedule unchanged"


def test_the_argument_table_covers_every_registered_schedule():
    covered = {(cls, arg) for cls, arg, _ in CHANGES} | NOT_CHANGING
    classes = {MindFormerRegister.get_cls(MindFormerModuleType.LR, n) for n in MindFormerRegister.names("lr")}
    classes = {c for c in classes if c.__module__.startswith("mindformers.core.lr.")}  # not user-registered ones
    assert classes == set(BASES)
    assert {(cls, arg) for cls in classes for arg in accepted_kwargs(cls)} == covered


def test_warmup_ratio_is_a_fraction_of_total_steps():
    lr = CosineWithWarmUpLR(1.0, warmup_ratio=0.1, total_steps=50)
    assert lr.warmup_steps == 5
    assert lr.value(1) == pytest.approx(0.2)
    assert lr.value(5) == pytest.approx(1.0)


def test_cosine_decay_ratio_is_the_step_the_rate_drops_to_lr_end():
    # upstream: the cosine still spans total_steps - warmup_steps; from decay_ratio * total_steps on it is lr_end
    lr = CosineWithWarmUpLR(1.0, warmup_steps=0, total_steps=100, decay_ratio=0.5, lr_end=0.1)
    assert lr.decay_steps == 50
    assert lr.value(25) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.25)), rel=1e-5)
    assert lr.value(49) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.49)), rel=1e-5)
    assert lr.value(50) == pytest.approx(0.1, rel=1e-5)
    assert lr.value(90) == pytest.approx(0.1, rel=1e-5)


def test_wsd_decay_start_ratio():
    lr = WarmUpStableDecayLR(1.0, lr_end=0.0, warmup_steps=2, total_steps=10, decay_start_ratio=0.6)
    assert lr.decay_start_steps == 6
    assert [round(lr.value(t), 5) for t in (1, 3, 6, 8, 10)] == [0.5, 1.0, 1.0, 0.5, 0.0]


def test_constant_warmup_lr_end_is_accepted_only_where_it_means_what_upstream_does():
    lr = build_from_config({"type": "ConstantWarmUpLR", "learning_rate": 2e-5, "lr_end": 2e-5, "warmup_lr_init": 0,
                            "warmup_steps": 200, "total_steps": 1000}, MindFormerModuleType.LR)  # deepseek3 671b
    assert [lr.value(t) for t in (100, 200, 999)] == pytest.approx([1e-5, 2e-5, 2e-5])
    with pytest.raises(ValueError, match=r"lr_end \(2e-05\) differs from learning_rate \(0.0002\)"):
        ConstantWarmUpLR(2e-4, lr_end=2e-5, warmup_steps=2000, total_steps=1908000)


def test_built_from_yaml_config():
    cfg = {"type": "CosineWithWarmUpLR", "learning_rate": 1e-3, "warmup_ratio": 0.01, "total_steps": 1000,
           "lr_end": 1e-5}
    lr = build_from_config(cfg, MindFormerModuleType.LR)
    assert isinstance(lr, CosineWithWarmUpLR)
    assert lr.warmup_steps == 10
    with pytest.raises(TypeError, match="warmup_step"):
        build_from_config({"type": "LinearWithWarmUpLR", "learning_rate": 1e-3, "total_steps": 10,
                           "warmup_step": 1}, MindFormerModuleType.LR)


UPSTREAM_ALIASES = {"constant_with_warmup": "ConstantWarmUpLR", "linear": "LinearWithWarmUpLR",
                    "cosine": "CosineWithWarmUpLR", "cosine_with_restarts": "CosineWithRestartsAndWarmUpLR",
                    "polynomial": "PolynomialWithWarmUpLR", "cosine_annealing": "CosineAnnealingLR",
                    "cosine_annealing_warm_restarts": "CosineAnnealingWarmRestarts"}


def test_aliases_are_upstreams_and_name_the_same_classes():
    assert {a: c.__name__ for a, c in LR_ALIASES.items()} == UPSTREAM_ALIASES
    for alias, name in UPSTREAM_ALIASES.items():
        assert MindFormerRegister.get_cls(MindFormerModuleType.LR, alias).__name__ == name


def test_run_general_task_lr_schedule_builds_upstreams_polynomial(tmp_path):
    # run_general_task.yaml's section, loaded (schema check included) and built as the trainer does
    path = tmp_path / "run_general_task.yaml"
    path.write_text(textwrap.dedent("""
        lr_schedule:
          type: polynomial
          learning_rate: 0.0001
          lr_end: 0.00001
          warmup_steps: 0
          total_steps: -1 # -1 means it will load the total steps of the dataset
        """))
    lr = build_lr_schedule(load_config(str(path)).lr_schedule, total_steps=50)
    assert isinstance(lr, PolynomialWithWarmUpLR) and lr.total_steps == 50
    want = PolynomialWithWarmUpLR(1e-4, total_steps=50, warmup_steps=0, lr_end=1e-5)
    assert [lr.value(t) for t in (0, 10, 49, 50, 60)] == pytest.approx([want.value(t) for t in (0, 10, 49, 50, 60)])
    assert lr.value(25) == pytest.approx(1e-5 + 9e-5 * 0.5, rel=1e-5)


def test_build_lr_schedule_passes_the_planned_steps_only_to_schedules_that_take_them():
    assert build_lr_schedule({"type": "cosine", "learning_rate": 1.0}, total_steps=40).total_steps == 40
    assert build_lr_schedule({"type": "cosine", "learning_rate": 1.0, "total_steps": 30}, 40).total_steps == 30
    sgdr = build_lr_schedule({"type": "cosine_annealing", "base_lr": 1.0, "t_max": 8, "total_steps": -1}, 40)
    assert isinstance(sgdr, CosineAnnealingLR) and sgdr.value(8) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(TypeError, match="total_steps"):
        build_lr_schedule({"type": "CosineAnnealingLR", "base_lr": 1.0, "t_max": 8, "total_steps": 100}, 40)


def test_unknown_schedule_name_lists_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match=r"lr_schedule.type: unknown LR schedule 'polynomal' \(valid: .*"
                                         r"PolynomialWithWarmUpLR.*polynomial"):
        build_lr_schedule({"type": "polynomal", "learning_rate": 1.0}, 10)
    path = tmp_path / "bad.yaml"
    path.write_text("lr_schedule:\n  type: cosine_anealing\n  base_lr: 1.0\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:2.*did you mean 'cosine_annealing'.*CosineAnnealingLR"):
        load_config(str(path))


PARAMS = ["embedding.word_embeddings.weight", "layers.0.attention.wq.weight", "layers.0.attention_norm.weight",
          "layers.1.attention.wq.weight", "layers.1.feed_forward.w1.weight", "norm_out.weight", "lm_head.weight",
          "output_layer.weight"]


def test_grouped_lr_schedule_groups_by_substring_or_glob_first_pattern_wins():
    section = {  # telechat3_moe's shape
        "default": {"type": "ConstantWarmUpLR", "learning_rate": 2e-4, "warmup_steps": 20, "total_steps": 2400},
        "grouped": [
            {"type": "ConstantWarmUpLR", "params": ["embedding.*", "output_layer.weight"], "learning_rate": 1e-4,
             "warmup_steps": 20, "total_steps": 2400},
            {"type": "cosine", "params": ["layers.1.*", "attention"], "learning_rate": 5e-4, "total_steps": -1},
        ]}
    default, groups = build_grouped_lr_schedule(section, PARAMS, total_steps=100)
    assert isinstance(default, ConstantWarmUpLR) and default.value(30) == pytest.approx(2e-4)
    assert [names for names, _ in groups] == [
        ["embedding.word_embeddings.weight", "output_layer.weight"],
        ["layers.0.attention.wq.weight", "layers.0.attention_norm.weight", "layers.1.attention.wq.weight",
         "layers.1.feed_forward.w1.weight"]]
    (_, first), (_, second) = groups
    assert first.value(30) == pytest.approx(1e-4)
    assert isinstance(second, CosineWithWarmUpLR) and second.total_steps == 100


@pytest.mark.parametrize("section, error", [
    ({"grouped": []}, r"grouped_lr_schedule.default: missing"),
    ({"default": {"type": "cosine", "learning_rate": 1.0}, "groups": []}, r"unknown key\(s\) groups"),
    ({"default": {"type": "cosine", "learning_rate": 1.0}, "grouped": [{"type": "cosine", "learning_rate": 1.0}]},
     r"grouped\[0\].params: expected a non-empty list"),
    ({"default": {"type": "cosine", "learning_rate": 1.0},
      "grouped": [{"type": "cosine", "learning_rate": 1.0, "params": "lm_head"}]}, r"grouped\[0\].params"),
    ({"default": {"type": "cosine", "learning_rate": 1.0},
      "grouped": [{"type": "cosine", "learning_rate": 1.0, "params": ["lm_head"]},
                  {"type": "linear", "learning_rate": 1.0, "params": ["vision.*", "experts"]}]},
     r"grouped\[1\].params: \['vision.\*', 'experts'\] match no trainable parameter"),
    ({"default": {"type": "cosine", "learning_rate": 1.0},
      "grouped": [{"type": "cosine", "learning_rate": 1.0, "params": ["lm_head"]},
                  {"type": "linear", "learning_rate": 1.0, "params": ["norm", "lm_head"]}]},
     r"grouped\[1\].params: 'lm_head' is already in grouped\[0\]"),
    ({"default": {"type": "cosine", "learning_rate": 1.0},
      "grouped": [{"type": "cosin", "learning_rate": 1.0, "params": ["lm_head"]}]},
     r"grouped_lr_schedule.grouped\[0\].type: unknown LR schedule 'cosin'"),
])
def test_grouped_lr_schedule_errors(section, error):
    with pytest.raises(ValueError, match=error):
        build_grouped_lr_schedule(section, PARAMS, total_steps=100)


def test_warmup_steps_and_ratio_together_is_an_error():
    with pytest.raises(ValueError, match="warmup_steps.*warmup_ratio"):
        LinearWithWarmUpLR(1e-3, total_steps=100, warmup_steps=5, warmup_ratio=0.1)


@pytest.mark.parametrize("total_steps", [None, -1])
@pytest.mark.parametrize("cls", [LinearWithWarmUpLR, CosineWithWarmUpLR, CosineWithRestartsAndWarmUpLR,
                                 PolynomialWithWarmUpLR, ConstantWithCoolDownLR])
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


@pytest.mark.parametrize("make, error", [
    (lambda: ConstantWithCoolDownLR(1e-3, keep_steps=-1, decay_steps=10), "keep_steps must be >= 0"),
    (lambda: ConstantWithCoolDownLR(1e-3, final_steps=-2, decay_steps=10), "final_steps must be >= 0"),
    (lambda: ConstantWithCoolDownLR(1e-3, decay_steps=10, decay_ratio=0.5, total_steps=100),
     "decay_steps.*decay_ratio.*not both"),
    (lambda: CosineWithWarmUpLR(1e-3, total_steps=100, decay_ratio=1.5), r"decay_ratio must be in \[0, 1\]"),
    (lambda: PolynomialWithWarmUpLR(1e-3, total_steps=100, lr_end=1e-3), r"lr_end \(0.001\) must be smaller"),
    (lambda: PolynomialWithWarmUpLR(1e-3, total_steps=100, power=-1.0), "power must be >= 0"),
    (lambda: PolynomialWithWarmUpLR(1e-3, total_steps=100, decay_steps=-3), "decay_steps must be >= 0"),
    (lambda: CosineAnnealingLR(1e-3, t_max=0), "t_max must be a positive integer"),
    (lambda: CosineAnnealingLR(1e-3, t_max=10.0), "t_max must be a positive integer"),
    (lambda: CosineAnnealingWarmRestarts(1e-3, t_0=0), "t_0 must be a positive integer"),
    (lambda: CosineAnnealingWarmRestarts(1e-3, t_0=5, t_mult=0), "t_mult must be a positive integer"),
    (lambda: LinearWithWarmUpLR(-1e-3, total_steps=10), "learning_rate must be >= 0"),
])
def test_bad_arguments_are_errors_naming_them(make, error):
    with pytest.raises(ValueError, match=error):
        make()


def test_warmup_as_long_as_the_run_then_lr_end():
    # upstream divides by max(1, total_steps - warmup_steps): a whole-run warm-up is valid
    lr = CosineWithWarmUpLR(1.0, warmup_steps=100, total_steps=100, lr_end=0.1)
    assert [lr.value(t) for t in (50, 99, 100)] == pytest.approx([0.5, 0.99, 0.1])
