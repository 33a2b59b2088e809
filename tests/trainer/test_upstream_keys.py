"""Upstream 2.x top-level keys that the trainer acts on, and parallel settings refused before any work."""
import json
import os
import time

import pytest
from mindspore.train import RunContext

from mindformers.checkpoint import find_resume_checkpoint
from mindformers.config import ConfigError, MindFormerConfig, load_config, validate_config
from mindformers.evaluation.during_training import EvalDuringTraining
from mindformers.trainer.builders import scaled_learning_rate
from mindformers.trainer.loop import data_skip_steps

BASE = "configs/llama/pretrain_llama_tiny.yaml"


def test_data_skip_on_resume_follows_ignore_data_skip_anddata_skip_steps():
    assert data_skip_steps(MindFormerConfig({}), 40) == 40
    assert data_skip_steps(MindFormerConfig({"ignore_data_skip": True, "data_skip_steps": 5}), 40) == 0
    assert data_skip_steps(MindFormerConfig({"data_skip_steps": 5}), 40) == 5
    with pytest.raises(ValueError, match="data_skip_steps"):
        data_skip_steps(MindFormerConfig({"data_skip_steps": -1}), 40)


def test_lr_scale_multiplies_by_the_global_batch_over_the_factor():
    config = MindFormerConfig({"lr_scale": True, "lr_scale_factor": 64, "runner_config": {"batch_size": 4}})
    section = {"type": "CosineWithWarmUpLR", "learning_rate": 1e-3}
    assert scaled_learning_rate(config, section, 2)["learning_rate"] == pytest.approx(1e-3 * 2 * 4 / 64)
    assert scaled_learning_rate(config, {"base_lr": 1e-3}, 1)["base_lr"] == pytest.approx(1e-3 * 4 / 64)
    assert scaled_learning_rate(MindFormerConfig({"lr_scale_factor": 64}), section, 2) == section


def _checkpoint(root, name, step):
    path = os.path.join(root, name)
    os.makedirs(path)
    with open(os.path.join(path, "state.json"), "w") as f:
        json.dump({"step": step}, f)
    return path


def test_resume_by_last_timestamp_takes_the_newest_checkpoint_written(tmp_path):
    older = _checkpoint(str(tmp_path), "run-step20", 20)
    time.sleep(0.05)
    newer = _checkpoint(str(tmp_path), "run-step10", 10)
    (tmp_path / "latest").write_text("run-step20")
    assert find_resume_checkpoint(str(tmp_path), True) == older
    assert find_resume_checkpoint(str(tmp_path), True, by_time=True) == newer


def test_load_ckpt_format_must_match_the_weights_file(tmp_path):
    from mindformers.checkpoint import load_weights
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(ValueError, match="load_ckpt_format: 'ckpt'"):
        load_weights(None, str(weights), expected_format="ckpt")


def test_eval_epoch_interval_evaluates_at_epoch_ends(monkeypatch):
    import mindformers.evaluation.during_training as during_training
    monkeypatch.setattr(during_training, "score_dataset", lambda net, ds: {"loss": 1.0, "perplexity": 2.7, "tokens": 1})
    callback = EvalDuringTraining(None, None, 0, None, epoch_interval=2)
    cb = MindFormerConfig({"cur_step_num": 0, "cur_epoch_num": 1})
    for step in range(1, 13):   # 3 steps an epoch, 4 epochs
        cb.cur_step_num, cb.cur_epoch_num = step, (step - 1) // 3 + 1
        callback.on_train_step_end(RunContext(cb))
        if step % 3 == 0:
            callback.on_train_epoch_end(RunContext(cb))
    assert [r["step"] for r in callback.results] == [6, 12]


@pytest.mark.parametrize("overrides,message", [
    (["use_parallel=True", "parallel.parallel_mode=1"], "'parallel.parallel_mode: 1' needs Ascend"),
    (["parallel_config.model_parallel=2"], "'parallel_config.model_parallel: 2' is not supported on CPU"),
    (["parallel_config.pipeline_stage=2"], "'parallel_config.pipeline_stage: 2' is not supported"),
    (["parallel_config.data_parallel=2"], "needs use_parallel: True and 2 workers"),
    (["parallel_config.expert_parallel=2"], "'parallel_config.expert_parallel: 2' is not supported"),
    (["runner_config.initial_step=5"], "runner_config.initial_step"),
    (["moe_config={expert_num: 8}"], "moe_config"),
    (["runner_wrapper.tensor_parallel=1"], "'runner_wrapper.tensor_parallel: 1' is not supported: set by the trainer"),
    (["runner_wrapper.norm_groups=[1]"], "'runner_wrapper.norm_groups: \\[1\\]' is not supported"),
])
def test_settings_that_cannot_run_are_refused_at_load(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(BASE, overrides)


def test_model_parallel_is_planned_on_ascend_not_refused():
    config = load_config(BASE, validate=False)
    config.context.device_target = "Ascend"
    config.merge_from_dict({"parallel_config.model_parallel": 2, "use_parallel": True, "parallel.parallel_mode": 1})
    validate_config(config)


def test_generation_keys_set_in_model_config_reach_generation():
    from mindformers.generation.predict import predict_generation_config
    config = MindFormerConfig({"model": {"model_config": {"top_k": 3, "do_sample": True, "max_decode_length": 40,
                                                          "repetition_penalty": 1.2, "top_p": 0.9}},
                               "generation_config": {"top_k": 7}})
    gen = predict_generation_config(config)
    assert (gen.top_k, gen.do_sample, gen.max_length, gen.repetition_penalty, gen.top_p) == (7, True, 40, 1.2, 0.9)


def test_grouped_lr_schedule_gives_matching_parameters_their_own_schedule(tmp_path):
    import numpy as np
    from mindformers.trainer.builders import build_model
    from mindformers.trainer.causal_lm import CausalLanguageModelingTrainer
    config = load_config(BASE, {"output_dir": str(tmp_path), "runner_config.stop_step": 2,
                                "runner_config.batch_size": 2, "model.model_config.num_layers": 1,
                                "callbacks": [{"type": "MFLossMonitor"}]})
    config.pop("lr_schedule")
    config.grouped_lr_schedule = {
        "default": {"type": "ConstantWarmUpLR", "learning_rate": 1e-3, "warmup_steps": 0},
        "grouped": [{"type": "ConstantWarmUpLR", "params": ["*embed_tokens*"], "learning_rate": 1e-12,
                     "warmup_steps": 0}]}
    validate_config(config)
    network = build_model(config)
    before = {p.name: p.asnumpy().copy() for p in network.trainable_params()}
    CausalLanguageModelingTrainer().train(config, network=network)
    for p in network.trainable_params():
        moved = np.abs(p.asnumpy() - before[p.name]).max()
        assert (moved < 1e-8) if "embed_tokens" in p.name else (moved > 1e-5), p.name
    with pytest.raises(ValueError, match="grouped_lr_schedule replaces lr_schedule"):
        config.lr_schedule = {"type": "ConstantWarmUpLR", "learning_rate": 1e-3}
        CausalLanguageModelingTrainer().train(config, network=network)


def _recomputed(network):
    return [layer._recompute_cell is not None for layer in network.model.layers]


def test_top_level_recompute_config_reaches_the_decoder_layers(caplog, monkeypatch):
    """Upstream puts recompute_config at the top level and its trainer hands it to every layer; on CPU, where it
    saves no memory, it is logged as having no effect instead."""
    import logging
    from mindformers.models import decoder
    from mindformers.tools import logger as log
    from mindformers.trainer.builders import build_model
    config = load_config(BASE, ["recompute_config.recompute=2"], validate=False)
    monkeypatch.setattr(log, "LOGGED_ONCE", set())  # an earlier test may have logged it
    with caplog.at_level(logging.INFO, logger="mindformers"):
        assert _recomputed(build_model(config)) == [False] * 4
    assert any("recompute_config.recompute: has no effect on CPU" in r.getMessage() for r in caplog.records)
    monkeypatch.setattr(decoder, "recompute_saves_memory", lambda: True)  # as on Ascend
    with caplog.at_level(logging.INFO, logger="mindformers"):
        network = build_model(config)
    assert _recomputed(network) == [True, True, False, False]
    assert any("2 of 4 decoder layers recompute" in r.getMessage() for r in caplog.records)
    assert _recomputed(build_model(load_config(BASE, [], validate=False))) == [False] * 4
    differing = load_config(BASE, ["recompute_config.recompute=True"], validate=False)
    differing.model.model_config.recompute_config = {"recompute": 1}
    with pytest.raises(ValueError, match="recompute_config .* and model.model_config.recompute_config .* differ"):
        build_model(differing)
    with pytest.raises(ConfigError, match="'recompute_config.select_recompute: True' is not supported"):
        validate_config(load_config(BASE, ["recompute_config.select_recompute=True"], validate=False))
