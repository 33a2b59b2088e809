"""AdamW against a float64 numpy transcription of torch.optim.AdamW's update rule."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Parameter, Tensor, nn

from mindformers.core.lr import LinearWithWarmUpLR
from mindformers.core.optim import AdamW, FP32StateAdamWeightDecay, get_optimizer_grouped_parameters
from mindformers.tools.register import MindFormerModuleType, MindFormerRegister, build_from_config

pytestmark = pytest.mark.usefixtures("graph_mode")
ms.set_device("CPU")


def torch_adamw(w, grads, lrs, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False):
    """torch.optim.AdamW (single tensor, non-fused) in float64."""
    beta1, beta2 = betas
    w = w.astype(np.float64)
    m, v, v_max = np.zeros_like(w), np.zeros_like(w), np.zeros_like(w)
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        g = -g if maximize else g
        w = w * (1 - lr * weight_decay)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        if amsgrad:
            v_max = np.maximum(v_max, v)
        denom = np.sqrt(v_max if amsgrad else v) / np.sqrt(1 - beta2 ** t) + eps
        w = w - lr / (1 - beta1 ** t) * m / denom
    return w


RNG = np.random.default_rng(0)
W0 = RNG.standard_normal((4, 3)).astype(np.float32)
# Shrinking gradients make v decrease, so amsgrad's running max matters.
GRADS = [(RNG.standard_normal((4, 3)) * 2.0 ** -i).astype(np.float32) for i in range(5)]


def run(optimizer_cls, grads=GRADS, **kwargs):
    param = Parameter(Tensor(W0), name="w")
    opt = optimizer_cls([param], **kwargs)
    for g in grads:
        opt((Tensor(g),))
    return param.asnumpy(), opt


@pytest.mark.parametrize("kwargs", [
    {},
    {"weight_decay": 0.1},
    {"weight_decay": 0.1, "amsgrad": True, "betas": (0.9, 0.5)},
    {"maximize": True, "betas": (0.8, 0.95), "eps": 1e-6},
], ids=["plain", "weight_decay", "amsgrad", "maximize"])
def test_adamw_matches_torch_formula(kwargs):
    got, opt = run(AdamW, learning_rate=1e-2, **kwargs)
    want = torch_adamw(W0, GRADS, [1e-2] * 5, **kwargs)
    assert np.abs(got - want).max() < 1e-6
    assert int(opt.global_step.asnumpy()[0]) == 5


def test_amsgrad_changes_the_result():
    plain, _ = run(AdamW, learning_rate=1e-2, betas=(0.9, 0.5))
    ams, _ = run(AdamW, learning_rate=1e-2, betas=(0.9, 0.5), amsgrad=True)
    assert np.abs(plain - ams).max() > 1e-3


def test_adamw_with_schedule_uses_lr_of_global_step():
    schedule = LinearWithWarmUpLR(1e-2, total_steps=6, warmup_steps=2)
    got, _ = run(AdamW, learning_rate=schedule, weight_decay=0.1)
    lrs = [0.0, 0.005, 0.01, 0.0075, 0.005]  # step 0 is the first update
    want = torch_adamw(W0, GRADS, lrs, weight_decay=0.1)
    assert np.abs(got - want).max() < 1e-6


def test_param_groups_have_their_own_weight_decay():
    a, b = Parameter(Tensor(W0), name="a"), Parameter(Tensor(W0[0]), name="b")
    opt = AdamW([{"params": [a], "weight_decay": 0.5}, {"params": [b], "weight_decay": 0.0}], learning_rate=1e-2)
    for g in GRADS:
        opt((Tensor(g), Tensor(g[0])))
    lrs = [1e-2] * 5
    assert np.abs(a.asnumpy() - torch_adamw(W0, GRADS, lrs, weight_decay=0.5)).max() < 1e-6
    assert np.abs(b.asnumpy() - torch_adamw(W0[0], [g[0] for g in GRADS], lrs)).max() < 1e-6


def test_fp32_state_variant_has_the_same_math_and_upstream_keys():
    got, opt = run(FP32StateAdamWeightDecay, learning_rate=1e-2, beta1=0.9, beta2=0.95, eps=1e-8,
                   weight_decay=0.1)
    want = torch_adamw(W0, GRADS, [1e-2] * 5, betas=(0.9, 0.95), weight_decay=0.1)
    assert np.abs(got - want).max() < 1e-6
    assert opt.moments1[0].dtype == ms.float32
    assert MindFormerRegister.get_cls(MindFormerModuleType.OPTIMIZER, "AdamWeightDecay") is FP32StateAdamWeightDecay


def test_fp16_params_keep_fp32_state():
    param = Parameter(Tensor(W0, ms.float16), name="w16")
    opt = FP32StateAdamWeightDecay([param], learning_rate=1e-2, eps=1e-8, weight_decay=0.1)
    assert opt.moments1[0].dtype == ms.float32 and opt.moments2[0].dtype == ms.float32
    for g in GRADS:
        opt((Tensor(g, ms.float16),))
    want = torch_adamw(W0.astype(np.float16), [g.astype(np.float16) for g in GRADS], [1e-2] * 5, weight_decay=0.1)
    assert param.dtype == ms.float16
    assert np.abs(param.asnumpy() - want).max() < 5e-3  # fp16 storage rounds each step
    assert AdamW([Parameter(Tensor(W0, ms.float16), name="h")]).moments1[0].dtype == ms.float16


def test_state_parameters_have_stable_names():
    _, opt = run(AdamW, amsgrad=True)
    names = {p.name for p in opt.get_parameters()}
    assert {"global_step", "adam_m.w", "adam_v.w", "max_adam_v.w"} <= names
    assert np.abs(opt.moments1[0].asnumpy()).sum() > 0


def test_built_from_yaml_config():
    param = Parameter(Tensor(W0), name="w")
    cfg = {"type": "AdamW", "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.1}
    opt = build_from_config(cfg, MindFormerModuleType.OPTIMIZER, params=[param], learning_rate=1e-3)
    assert isinstance(opt, AdamW) and (opt.beta1, opt.beta2) == (0.9, 0.95)


@pytest.mark.parametrize("kwargs, match", [
    ({"betas": (0.9, 1.0)}, "betas"),
    ({"eps": 0.0}, "eps"),
    ({"weight_decay": -1.0}, "weight_decay"),
    ({"use_fused": True}, "use_fused"),
])
def test_bad_arguments_name_the_key(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AdamW([Parameter(Tensor(W0), name="w")], **kwargs)


class _Tiny(nn.Cell):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(10, 4)
        self.proj = nn.Dense(4, 4)
        self.final_norm = nn.LayerNorm((4,))

    def construct(self, x):
        return self.final_norm(self.proj(self.embedding(x)))


def test_grouped_parameters_exempt_norms_and_biases():
    groups = get_optimizer_grouped_parameters(_Tiny(), weight_decay=0.1)
    decay, no_decay = ({p.name for p in g["params"]} for g in groups)
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert decay == {"embedding.embedding_table", "proj.weight"}
    assert no_decay == {"proj.bias", "final_norm.gamma", "final_norm.beta"}
    assert isinstance(AdamW(groups), AdamW)
