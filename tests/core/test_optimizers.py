"""Adam, SGD (momentum, nesterov), Lion and Adafactor: 5 steps against numpy formulas (and torch when present),
parameter groups, YAML-built training, and exact resume of optimizer state."""
import os

import mindspore as ms
import numpy as np
import pytest
from mindspore import Parameter, Tensor

from mindformers.config import load_config
from mindformers.core.optim import SGD, Adafactor, Adam, AdamW, Lion
from mindformers.trainer.causal_lm import CausalLanguageModelingTrainer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHAPES = [(6, 5), (5,)]
STEPS = 5
rng = np.random.default_rng(0)
W0 = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
GRADS = [[rng.standard_normal(s).astype(np.float32) for s in SHAPES] for _ in range(STEPS)]

pytestmark = pytest.mark.usefixtures("graph_mode")


def run_ours(cls, groups=False, **kwargs):
    params = [Parameter(Tensor(w.copy()), name=f"p{i}") for i, w in enumerate(W0)]
    if groups:  # decay on the matrix only, as get_optimizer_grouped_parameters does
        arg = [{"params": [params[0]], "weight_decay": kwargs.pop("weight_decay")},
               {"params": [params[1]], "weight_decay": 0.0}]
    else:
        arg = params
    opt = cls(arg, **kwargs)
    for grads in GRADS:
        opt(tuple(Tensor(g) for g in grads))
    return [p.asnumpy() for p in params]


# ------------------------------------------------------------------------------------------- numpy references
def ref_adam(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decays=None):
    ws = [w.astype(np.float64) for w in W0]
    m = [np.zeros_like(w) for w in ws]
    v = [np.zeros_like(w) for w in ws]
    decays = decays or [weight_decay] * len(ws)
    for t, grads in enumerate(GRADS, 1):
        for i, g in enumerate(grads):
            g = g + decays[i] * ws[i]
            m[i] = betas[0] * m[i] + (1 - betas[0]) * g
            v[i] = betas[1] * v[i] + (1 - betas[1]) * g * g
            ws[i] = ws[i] - lr * (m[i] / (1 - betas[0] ** t)) / (np.sqrt(v[i] / (1 - betas[1] ** t)) + eps)
    return ws


def ref_sgd(lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    ws = [w.astype(np.float64) for w in W0]
    bufs = [None] * len(ws)
    for grads in GRADS:
        for i, g in enumerate(grads):
            d = g + weight_decay * ws[i]
            if momentum:
                bufs[i] = d.copy() if bufs[i] is None else momentum * bufs[i] + (1 - dampening) * d
                d = d + momentum * bufs[i] if nesterov else bufs[i]
            ws[i] = ws[i] - lr * d
    return ws


def ref_lion(lr, betas=(0.9, 0.99), weight_decay=0.0):
    ws = [w.astype(np.float64) for w in W0]
    m = [np.zeros_like(w) for w in ws]
    for grads in GRADS:
        for i, g in enumerate(grads):
            ws[i] = ws[i] * (1 - lr * weight_decay) - lr * np.sign(betas[0] * m[i] + (1 - betas[0]) * g)
            m[i] = betas[1] * m[i] + (1 - betas[1]) * g
    return ws


def ref_adafactor(lr, beta2_decay=-0.8, eps1=np.finfo(np.float32).eps, eps2=1e-3, d=1.0, weight_decay=0.0):
    ws = [w.astype(np.float64) for w in W0]
    row = [np.zeros((w.shape[0], 1)) if w.ndim == 2 else None for w in ws]
    col = [np.zeros((1, w.shape[1])) if w.ndim == 2 else None for w in ws]
    var = [None if w.ndim == 2 else np.zeros_like(w) for w in ws]
    for t, grads in enumerate(GRADS, 1):
        for i, g in enumerate(grads):
            g = g.astype(np.float64)
            rho = min(lr, 1 / np.sqrt(t))
            alpha = max(eps2, np.sqrt(np.mean(ws[i] ** 2))) * rho
            ws[i] = ws[i] * (1 - lr * weight_decay)
            k = t ** beta2_decay
            if ws[i].ndim == 2:
                row[i] += (np.mean(g * g, -1, keepdims=True) - row[i]) * k
                col[i] += (np.mean(g * g, -2, keepdims=True) - col[i]) * k
                v = row[i] @ col[i] / max(row[i].mean(), eps1)
            else:
                var[i] += (g * g - var[i]) * k
                v = var[i]
            u = g / np.sqrt(np.maximum(v, eps1 * eps1))
            ws[i] = ws[i] - alpha / max(1.0, np.sqrt(np.mean(u * u)) / d) * u
    return ws


CASES = [
    (Adam, dict(learning_rate=1e-2, weight_decay=0.1), lambda: ref_adam(1e-2, weight_decay=0.1)),
    (Adam, dict(learning_rate=1e-2, weight_decay=0.1, groups=True), lambda: ref_adam(1e-2, decays=[0.1, 0.0])),
    (SGD, dict(learning_rate=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01),
     lambda: ref_sgd(0.1, 0.9, 0.1, weight_decay=0.01)),
    (SGD, dict(learning_rate=0.1, momentum=0.9, nesterov=True), lambda: ref_sgd(0.1, 0.9, nesterov=True)),
    (SGD, dict(learning_rate=0.1), lambda: ref_sgd(0.1)),
    (Lion, dict(learning_rate=1e-2, weight_decay=0.5), lambda: ref_lion(1e-2, weight_decay=0.5)),
    (Adafactor, dict(learning_rate=1e-2, weight_decay=0.1), lambda: ref_adafactor(1e-2, weight_decay=0.1)),
    (Adafactor, dict(learning_rate=1.0, d=0.5), lambda: ref_adafactor(1.0, d=0.5)),
]


@pytest.mark.parametrize("cls, kwargs, reference", CASES, ids=[f"{c[0].__name__}{i}" for i, c in enumerate(CASES)])
def test_matches_the_formula(cls, kwargs, reference):
    kwargs = dict(kwargs)
    groups = kwargs.pop("groups", False)
    for got, want in zip(run_ours(cls, groups, **kwargs), reference()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name, ours, make", [
    ("Adam", dict(learning_rate=1e-2, weight_decay=0.1), lambda t, p: t.optim.Adam(p, lr=1e-2, weight_decay=0.1)),
    ("SGD", dict(learning_rate=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
     lambda t, p: t.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("Adafactor", dict(learning_rate=1e-2, weight_decay=0.1),
     lambda t, p: t.optim.Adafactor(p, lr=1e-2, weight_decay=0.1)),
])
def test_matches_torch(name, ours, make):
    torch = pytest.importorskip("torch")
    params = [torch.nn.Parameter(torch.from_numpy(w.copy())) for w in W0]
    opt = make(torch, params)
    for grads in GRADS:
        for p, g in zip(params, grads):
            p.grad = torch.from_numpy(g.copy())
        opt.step()
    cls = {"Adam": Adam, "SGD": SGD, "Adafactor": Adafactor}[name]
    for got, want in zip(run_ours(cls, **dict(ours)), params):
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls, kwargs, message", [
    (SGD, dict(momentum=1.5), r"SGD: momentum must be a number in \[0.0, 1.0\)"),
    (SGD, dict(nesterov=True), "SGD: nesterov needs momentum > 0 and dampening 0"),
    (Lion, dict(betas=(0.9,)), "Lion: betas must be two numbers"),
    (Adafactor, dict(beta2_decay=0.5), "Adafactor: beta2_decay must be <= 0"),
    (Adafactor, dict(d=0), r"Adafactor: d \(the update clipping threshold\) must be > 0"),
    (Lion, dict(weight_decay=-1), "Lion: weight_decay must be a number >= 0"),
])
def test_argument_errors(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls([Parameter(Tensor(W0[0].copy()), name="w")], **kwargs)


SMALL = {"runner_config.batch_size": 2, "model.model_config.num_layers": 1, "model.model_config.hidden_size": 32,
         "model.model_config.intermediate_size": 64, "model.model_config.num_heads": 4,
         "model.model_config.n_kv_heads": 2, "model.model_config.seq_length": 32,
         "callbacks": [{"type": "MFLossMonitor"}, {"type": "CheckpointMonitor", "prefix": "t",
                                                  "save_checkpoint_steps": 2}]}


@pytest.mark.parametrize("optimizer", [
    {"type": "Adam", "betas": [0.9, 0.95], "weight_decay": 0.0},
    {"type": "SGD", "momentum": 0.9, "weight_decay": 0.0},
    {"type": "Lion", "betas": [0.9, 0.99], "weight_decay": 0.1},
    {"type": "Adafactor", "weight_decay": 0.0},
])
def test_yaml_built_training(tmp_path, optimizer):
    config = load_config(os.path.join(ROOT, "configs/llama/pretrain_llama_tiny.yaml"),
                         {**SMALL, "output_dir": str(tmp_path), "runner_config.stop_step": 3})
    config.optimizer = optimizer
    if optimizer["type"] == "Lion":
        config.lr_schedule.learning_rate = 3e-4
    history = CausalLanguageModelingTrainer().train(config)
    assert len(history) == 3 and all(np.isfinite(r["loss"]) for r in history)
    assert history[-1]["loss"] < history[0]["loss"]


def test_sgd_momentum_resumes_exactly(tmp_path):
    def config(out, **extra):
        cfg = load_config(os.path.join(ROOT, "configs/llama/pretrain_llama_tiny.yaml"),
                          {**SMALL, "output_dir": str(out), **extra})
        cfg.optimizer = {"type": "SGD", "momentum": 0.9, "weight_decay": 0.0}
        return cfg

    straight = CausalLanguageModelingTrainer().train(config(tmp_path / "a", **{"runner_config.stop_step": 4}))
    CausalLanguageModelingTrainer().train(config(tmp_path / "b", **{"runner_config.stop_step": 2}))
    resumed = CausalLanguageModelingTrainer().train(config(
        tmp_path / "b", **{"runner_config.stop_step": 4, "resume_training": True,
                           "load_checkpoint": str(tmp_path / "b" / "checkpoint")}))
    assert [r["loss"] for r in resumed] == [r["loss"] for r in straight[2:]]
    ms.set_seed(0)


@pytest.mark.parametrize("cls, kwargs", [(AdamW, {"amsgrad": True}), (SGD, {"momentum": 0.9}), (Lion, {}),
                                         (Adafactor, {})])
def test_state_of_a_parameter_s_shape_is_its_clone(cls, kwargs):
    """What MindSpore's semi-auto compile walks to cut optimizer state like its weight (param_info.cloned_obj,
    as Parameter.clone registers): every state shaped like its parameter, none of another shape."""
    params = [Parameter(Tensor(w.copy()), name=f"p{i}") for i, w in enumerate(W0)]
    opt = cls(params, **kwargs)
    for p in params:
        clones = getattr(p.param_info, "cloned_obj", [])
        states = [s for s in opt.get_parameters() if s.name.endswith("." + p.name)]
        assert states and [s.name for s in clones] == [s.name for s in states if s.shape == p.shape]
        assert all(any(c is s for s in states) for c in clones)
