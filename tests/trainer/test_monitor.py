"""monitor_config: per-layer gradient norms from the compiled step, weight norms, spike detection, stopping."""
import json
import os

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from mindformers.config import load_config
from mindformers.core.callback.monitor import TrainingStateMonitor, group_of, is_spike, norm_groups
from mindformers.core.optim import AdamW
from mindformers.models import LlamaConfig, LlamaForCausalLM
from mindformers.trainer.causal_lm import CausalLanguageModelingTrainer, TrainingStopped
from mindformers.wrapper import MFTrainOneStepCell

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "configs/llama/pretrain_llama_tiny.yaml")
SMALL = {"runner_config.batch_size": 2, "model.model_config.num_layers": 2, "model.model_config.hidden_size": 32,
         "model.model_config.intermediate_size": 64, "model.model_config.num_heads": 4,
         "model.model_config.n_kv_heads": 2, "model.model_config.seq_length": 32}


def test_groups_and_filters():
    names = ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight",
             "model.layers.11.input_layernorm.weight", "model.norm.weight", "lm_head.weight"]
    assert [group_of(n) for n in names] == ["embedding", "layer_00", "layer_00", "layer_11", "final_norm", "lm_head"]
    groups, matrix = norm_groups(names)
    assert groups == ["embedding", "final_norm", "layer_00", "layer_11", "lm_head"]
    assert matrix.sum(0).tolist() == [1.0] * 6 and matrix[2].tolist() == [0, 1, 1, 0, 0, 0]
    groups, matrix = norm_groups(names, target=[r"mlp\.", "norm"], invert=True)
    assert groups == ["embedding", "layer_00", "lm_head"] and matrix.sum() == 3
    with pytest.raises(ValueError, match="picks no parameter"):
        norm_groups(names, target=["nothing"])


def test_spike_rule():
    history = [1.0, 1.1, 0.9, 1.05]
    assert not is_spike(2.5, history, 3.0, 20) and is_spike(3.5, history, 3.0, 20)
    assert not is_spike(100.0, history[:2], 3.0, 20)  # too little history to judge
    assert is_spike(3.5, [50.0] * 30 + history, 3.0, 4)  # only the window counts


@pytest.mark.usefixtures("graph_mode")
def test_group_norms_come_from_the_compiled_step_and_add_up():
    ms.set_seed(0)
    net = LlamaForCausalLM(LlamaConfig(hidden_size=32, num_layers=2, num_heads=4, n_kv_heads=2, vocab_size=64,
                                       intermediate_size=48, seq_length=16))
    opt = AdamW(net.trainable_params(), learning_rate=1e-3)
    groups, matrix = norm_groups([p.name for p in opt.parameters])
    step = MFTrainOneStepCell(net, opt, norm_groups=matrix)
    step.set_train(True)
    ids = Tensor(np.random.default_rng(0).integers(0, 64, (2, 17)).astype(np.int32))
    loss, overflow, scale, norm, group_norms = step(ids)
    group_norms = group_norms.asnumpy()
    assert group_norms.shape == (len(groups),) and groups[:2] == ["embedding", "final_norm"]
    np.testing.assert_allclose(np.sum(group_norms.astype(np.float64) ** 2), float(norm.asnumpy()) ** 2, rtol=1e-5)


def test_monitored_run_dumps_per_layer_norms(tmp_path, caplog):
    dump = tmp_path / "monitor.jsonl"
    config = load_config(TINY, {**SMALL, "output_dir": str(tmp_path), "runner_config.stop_step": 4,
                                "monitor_config.monitor_on": True, "monitor_config.step_interval": 2,
                                "monitor_config.dump_path": str(dump), "monitor_config.print_struct": True,
                                "monitor_config.weight_state_format": "log"})
    with caplog.at_level("INFO", logger="mindformers"):
        history = CausalLanguageModelingTrainer().train(config)
    records = [json.loads(line) for line in open(dump, encoding="utf-8")]
    assert [r["step"] for r in records] == [2, 4]
    assert set(records[0]["local_norm"]) == {"embedding", "layer_00", "layer_01", "final_norm", "lm_head"}
    total = sum(v ** 2 for v in records[1]["local_norm"].values()) ** 0.5
    assert abs(total - history[3]["grad_norm"]) < 1e-4 * history[3]["grad_norm"]
    assert records[0]["weight_norm"]["layer_00"] > 0
    assert "step 2 gradient norms: embedding" in caplog.text and "monitor group" in caplog.text


def test_absolute_spikes_in_a_row_stop_the_run(tmp_path):
    config = load_config(TINY, {**SMALL, "output_dir": str(tmp_path), "runner_config.stop_step": 6,
                                "monitor_config.monitor_on": True, "monitor_config.check_for_global_norm": True,
                                "monitor_config.global_norm_spike_threshold": 1e-9,
                                "monitor_config.global_norm_spike_count_threshold": 2})
    with pytest.raises(TrainingStopped, match="above global_norm_spike_threshold 1e-09 for 2 steps in a row"):
        CausalLanguageModelingTrainer().train(config)


def test_unimplemented_monitor_keys_are_refused():
    with pytest.raises(ValueError, match=r"\['optimizer_state_format'\] are not implemented"):
        TrainingStateMonitor(["layer_00"], optimizer_state_format="log")
    with pytest.raises(ValueError, match="local_norm_format: \\['csv'\\] not valid"):
        TrainingStateMonitor(["layer_00"], local_norm_format="csv")
