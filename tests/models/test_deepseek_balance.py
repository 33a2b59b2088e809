"""DeepSeek-V3's auxiliary-loss-free balancing: the expert-score bias moves after each training step."""
import os

import mindspore.dataset as ds
import numpy as np

from mindformers.config import load_config
from mindformers.models.hf import from_pretrained
from mindformers.trainer.causal_lm import CausalLanguageModelingTrainer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "hf_tiny_deepseek_v3")
RATE = 0.01


def _routers(net):
    return [cell for _, cell in net.cells_and_names() if hasattr(cell, "e_score_correction_bias")]


def test_bias_moves_by_the_rate_towards_balance_after_every_step(tmp_path):
    net = from_pretrained(FIXTURE, seq_length=16, expert_bias_update_rate=RATE)
    before = [r.e_score_correction_bias.asnumpy().copy() for r in _routers(net)]
    rows = np.random.default_rng(0).integers(0, net.config.vocab_size, (8, 17)).astype(np.int32)
    dataset = ds.GeneratorDataset([(row,) for row in rows], ["input_ids"], shuffle=False).batch(2)
    config = load_config(os.path.join(ROOT, "configs/llama/pretrain_llama_tiny.yaml"),
                         {"output_dir": str(tmp_path), "runner_config.stop_step": 3, "runner_config.batch_size": 2,
                          "callbacks": [{"type": "MFLossMonitor"}]})
    config.processor = None
    history = CausalLanguageModelingTrainer().train(config, network=net, dataset=dataset)  # adds the callback
    assert len(history) == 3
    for router, start in zip(_routers(net), before):
        moved = (router.e_score_correction_bias.asnumpy() - start) / RATE
        np.testing.assert_allclose(moved, np.round(moved), atol=1e-3)   # whole steps of the rate
        assert np.abs(moved).max() <= 3 + 1e-3 and np.abs(moved).sum() > 0
        assert not router.expert_load.asnumpy().any()   # reset after each step


def test_without_a_rate_there_is_no_load_counter_and_checkpoints_load_either_way(tmp_path):
    plain = from_pretrained(FIXTURE)
    assert not any(hasattr(r, "expert_load") for r in _routers(plain))
    counting = from_pretrained(FIXTURE, expert_bias_update_rate=RATE)  # an HF directory has no expert_load
    assert all(r.expert_load.asnumpy().shape == (plain.config.n_routed_experts,) for r in _routers(counting))
