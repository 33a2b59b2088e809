"""Every registered model (research families included) conforms to the CausalLM contract that the trainer,
generation and evaluation rely on: the methods with their signatures, and the shapes each returns."""
import inspect
import os

import mindspore as ms
import numpy as np
import pytest

from mindformers.models.base import CausalLM
from mindformers.models.hf import from_pretrained
from mindformers.models.decoder import packed_positions_and_mask
from mindformers.tools.register import MindFormerModuleType, MindFormerRegister, register_path

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
register_path(os.path.join(ROOT, "research", "internlm2"))
FIXTURES = {"LlamaForCausalLM": "hf_tiny_llama", "Qwen2ForCausalLM": "hf_tiny_qwen2",
            "Qwen3ForCausalLM": "hf_tiny_qwen3", "MixtralForCausalLM": "hf_tiny_mixtral",
            "Qwen3MoeForCausalLM": "hf_tiny_qwen3_moe",
            "DeepseekV3ForCausalLM": "hf_tiny_deepseek_v3", "Glm4ForCausalLM": "hf_tiny_glm4"}
MODELS = MindFormerRegister.names(MindFormerModuleType.MODELS)
CONTRACT = [name for name, member in vars(CausalLM).items() if inspect.isfunction(member) and name[0] != "_"]


def build(name: str):
    if name in FIXTURES:
        return from_pretrained(os.path.join(ROOT, "tests", "fixtures", FIXTURES[name]))
    cls = MindFormerRegister.get_cls(MindFormerModuleType.MODELS, name)  # a research family: its tiny config
    config = cls.config_class(seq_length=16, hidden_size=32, num_layers=2, num_heads=4, n_kv_heads=2,
                              intermediate_size=64, vocab_size=64)
    return cls(config)


def test_every_registered_model_is_covered():
    assert set(MODELS) - set(FIXTURES) == {"InternLM2ForCausalLM"}


@pytest.mark.parametrize("name", MODELS)
def test_model_has_the_contract_methods_with_their_signatures(name):
    cls = MindFormerRegister.get_cls(MindFormerModuleType.MODELS, name)
    for method in CONTRACT:
        ours = list(inspect.signature(getattr(cls, method)).parameters)
        assert ours == list(inspect.signature(getattr(CausalLM, method)).parameters), (name, method)


@pytest.mark.parametrize("name", MODELS)
def test_model_returns_the_contract_shapes(name, pynative_mode):
    net = build(name)
    assert isinstance(net, CausalLM)
    vocab, (B, T) = net.config.vocab_size, (2, 5)
    ids = ms.Tensor(np.random.default_rng(0).integers(0, vocab, (B, T + 1)), ms.int32)
    full = net.logits(ids[:, :-1])
    assert full.shape == (B, T, vocab) and net(ids[:, :-1]).shape == (B, T, vocab)
    index = ms.Tensor([[4, 0], [2, 3]], ms.int32)
    np.testing.assert_allclose(net.logits_at(ids[:, :-1], index).asnumpy(),
                               full.asnumpy()[np.arange(B)[:, None], index.asnumpy()], atol=1e-5, rtol=0)
    positions, mask = packed_positions_and_mask(ms.Tensor(np.tile(np.arange(T), (B, 1)), ms.int32))
    assert net.forward_positions(ids[:, :-1], positions, mask).shape == (B, T, vocab)
    caches = net.init_kv_caches(B, T + 1)
    assert len(caches) == net.config.num_layers
    logits, caches = net.prefill(ids[:, :-1], positions, mask, caches)
    assert logits.shape == (B, vocab)
    step_pos = ms.Tensor(np.full((B, 1), T), ms.int32)
    step_mask = ms.Tensor(np.ones((B, 1, T + 1), bool))
    logits, _ = net.decode(ids[:, -1:], step_pos, step_mask, caches, ms.Tensor([T], ms.int32))
    assert logits.shape == (B, vocab)
    net.set_train(True)
    loss = net(ids)
    net.set_train(False)
    assert loss.shape == () and np.isfinite(float(loss.asnumpy()))
    assert net.num_params() > net.num_params(exclude_embeddings=True) > 0 and net.flops_per_token() > 0
