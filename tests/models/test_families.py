"""The checks every family shares, once, parametrized over the families: causality, the parameter-count formula
(untied and tied), overfitting one batch, the tiny shipped YAML. Family files keep what is their own (numerics
against numpy or transformers, config keys and errors, published sizes)."""
import contextlib
from dataclasses import dataclass, field

import mindspore as ms
import numpy as np
import pytest

from family_checks import build_model_from_yaml, check_causal, check_overfits
from mindformers.models import (DeepseekV3Config, DeepseekV3ForCausalLM, Glm4Config, Glm4ForCausalLM, LlamaConfig,
                                LlamaForCausalLM, MixtralConfig, MixtralForCausalLM, Qwen2Config, Qwen2ForCausalLM,
                                Qwen3Config, Qwen3ForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM)

BASE = dict(seq_length=16, hidden_size=32, num_layers=2, num_heads=4, n_kv_heads=2, vocab_size=64,
            initializer_range=0.1)


@dataclass
class Family:
    config_class: type
    model_class: type
    tiny: dict
    yaml: str
    yaml_check: tuple  # (config attribute, value) the tiny YAML sets
    tied_overrides: dict = field(default_factory=dict)  # a variant whose lm_head is the embedding
    overfit: dict = field(default_factory=dict)  # overrides for the overfit run
    overfit_steps: int = 30
    uniform_tolerance: float = 0.0  # > 0: the first overfit loss must be this close to log(vocab)
    mode: int = ms.GRAPH_MODE


FAMILIES = {
    "llama": Family(LlamaConfig, LlamaForCausalLM, dict(BASE, multiple_of=8), "llama/pretrain_llama_tiny.yaml",
                    ("qkv_has_bias", False), {"qkv_has_bias": True},
                    # recompute on: the overfit run also checks that recomputed layers train
                    dict(seq_length=32, hidden_size=64, vocab_size=256, multiple_of=16, initializer_range=0.02,
                         recompute_config={"recompute": True}), uniform_tolerance=0.2),
    "qwen2": Family(Qwen2Config, Qwen2ForCausalLM, dict(BASE, intermediate_size=48),
                    "qwen2/pretrain_qwen2_tiny.yaml", ("qkv_has_bias", True)),
    "qwen3": Family(Qwen3Config, Qwen3ForCausalLM, dict(BASE, head_dim=16, intermediate_size=48),
                    "qwen3/pretrain_qwen3_tiny.yaml", ("head_dim", 64), {"qk_norm": False}),
    "mixtral": Family(MixtralConfig, MixtralForCausalLM,
                      dict(BASE, intermediate_size=24, num_experts=4, num_experts_per_tok=2, router_aux_loss_coef=0.5),
                      "mixtral/pretrain_mixtral_tiny.yaml", ("num_experts", 4)),
    "qwen3_moe": Family(Qwen3MoeConfig, Qwen3MoeForCausalLM,
                        dict(BASE, head_dim=16, intermediate_size=64, moe_intermediate_size=16, num_experts=8,
                             num_experts_per_tok=2, norm_topk_prob=False),
                        "qwen3_moe/pretrain_qwen3_moe_tiny.yaml", ("num_experts", 8), overfit_steps=20),
    "glm4": Family(Glm4Config, Glm4ForCausalLM, dict(BASE, max_position_embedding=64, head_dim=16,
                                                     intermediate_size=48, bos_token_id=1, eos_token_id=2,
                                                     pad_token_id=0),
                   "glm4/pretrain_glm4_tiny.yaml", ("rotary_dim", 32), {"qkv_has_bias": False}),
    # PYNATIVE: every DeepSeek instance would otherwise compile its own forward graph; training still compiles
    "deepseek_v3": Family(DeepseekV3Config, DeepseekV3ForCausalLM,
                          dict(BASE, seq_length=32, n_kv_heads=None, intermediate_size=64, q_lora_rank=16,
                               kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8,
                               moe_intermediate_size=16, n_routed_experts=4, n_shared_experts=1,
                               num_experts_per_tok=2, n_group=2, topk_group=1, first_k_dense_replace=1),
                          "deepseek_v3/pretrain_deepseek_v3_tiny.yaml", ("n_routed_experts", 8),
                          {"q_lora_rank": None, "qkv_has_bias": True, "first_k_dense_replace": 0},
                          overfit_steps=20, mode=ms.PYNATIVE_MODE),
}
# compiling these train graphs takes longest: run with the slow tests
SLOW_OVERFIT = {"qwen3_moe", "deepseek_v3"}


@contextlib.contextmanager
def mode(value):
    before = ms.get_context("mode")
    ms.set_context(mode=value)
    try:
        yield
    finally:
        ms.set_context(mode=before)


def build(family: Family, **overrides):
    ms.set_seed(0)
    return family.model_class(family.config_class(**{**family.tiny, **overrides}))


@pytest.mark.parametrize("name", FAMILIES)
def test_causal(name):
    family = FAMILIES[name]
    with mode(family.mode):
        check_causal(build(family))


@pytest.mark.parametrize("name", FAMILIES)
def test_num_params_formula_untied_and_tied(name):
    family = FAMILIES[name]
    for overrides in ({}, {"tie_word_embeddings": True, **family.tied_overrides}):
        net = build(family, **overrides)
        assert ("lm_head.weight" in dict(net.parameters_and_names())) != bool(overrides)
        assert net.num_params() == net.config.num_params() == sum(p.size for p in net.get_parameters())
        assert net.num_params(exclude_embeddings=True) == net.config.num_params(exclude_embeddings=True)
        assert net.flops_per_token() == net.config.flops_per_token()


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_OVERFIT else n
                                  for n in FAMILIES if n != "glm4"])
def test_overfits_one_batch(name):
    family = FAMILIES[name]
    overrides = {"seq_length": 32, **family.overfit}
    vocab = overrides.get("vocab_size", family.tiny["vocab_size"])
    net = build(family, **overrides)
    if "recompute_config" in overrides:  # skipped on CPU (no memory saved there); the recomputed path must train
        assert net.apply_recompute(overrides["recompute_config"], on_cpu_too=True) == net.config.num_layers
    with mode(ms.GRAPH_MODE):
        losses = check_overfits(net, vocab, steps=family.overfit_steps)
    assert np.isfinite(losses).all()
    if family.uniform_tolerance:
        assert abs(losses[0] - np.log(vocab)) < family.uniform_tolerance  # a fresh model is close to uniform


@pytest.mark.parametrize("name", FAMILIES)
def test_tiny_yaml_builds(name):
    family = FAMILIES[name]
    model = build_model_from_yaml(family.yaml)
    key, value = family.yaml_check
    assert isinstance(model, family.model_class) and getattr(model.config, key) == value
