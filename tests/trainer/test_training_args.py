"""TrainingArguments map onto YAML keys; a Trainer runs from them with a model and dataset passed in."""
import numpy as np
import pytest
import mindspore.dataset as ds

from mindformers import Trainer, TrainingArguments
from mindformers.config import ConfigError, load_config
from mindformers.models import LlamaConfig, LlamaForCausalLM

TINY_YAML = "configs/llama/pretrain_llama_tiny.yaml"


def test_fields_map_onto_yaml_keys():
    args = TrainingArguments(output_dir="o", num_train_epochs=2, per_device_train_batch_size=4, learning_rate=1e-3,
                             warmup_steps=5, adam_betas=(0.9, 0.99), max_steps=7, logging_steps=2, save_steps=3,
                             extra={"optimizer.weight_decay": 0.05})
    cfg = args.to_config()
    assert cfg.output_dir == "o" and cfg.runner_config.epochs == 2 and cfg.runner_config.batch_size == 4
    assert cfg.lr_schedule.learning_rate == 1e-3 and cfg.lr_schedule.warmup_steps == 5
    assert cfg.optimizer.betas == [0.9, 0.99] and cfg.optimizer.weight_decay == 0.05
    assert cfg.runner_config.stop_step == 7
    loss_cb = next(c for c in cfg.callbacks if c.type == "MFLossMonitor")
    ckpt_cb = next(c for c in cfg.callbacks if c.type == "CheckpointMonitor")
    assert loss_cb.per_print_times == 2 and ckpt_cb.save_checkpoint_steps == 3


def test_applies_on_top_of_a_yaml_and_checks_keys():
    cfg = TrainingArguments(learning_rate=5e-4).to_config(load_config(TINY_YAML))
    assert cfg.lr_schedule.learning_rate == 5e-4 and cfg.model.model_config.type == "LlamaConfig"
    with pytest.raises(ConfigError, match="unknown key 'optimizer.wieght_decay'"):
        TrainingArguments(extra={"optimizer.wieght_decay": 0.1}).to_config()


def test_trainer_runs_from_arguments_with_model_and_dataset(tmp_path):
    config = LlamaConfig(seq_length=16, hidden_size=32, num_layers=1, num_heads=4, n_kv_heads=2, vocab_size=64,
                         intermediate_size=64)
    model = LlamaForCausalLM(config)
    data = np.random.default_rng(0).integers(0, 64, size=(64, 17)).astype(np.int32)
    dataset = ds.NumpySlicesDataset({"input_ids": data}, shuffle=False).batch(8, drop_remainder=True)
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=8, num_train_epochs=3,
                             learning_rate=1e-2, warmup_steps=2, save_steps=100)
    history = Trainer(args=args, model=model, train_dataset=dataset).train()
    assert len(history) == 24
    assert np.mean([r["loss"] for r in history[-4:]]) < np.mean([r["loss"] for r in history[:4]]) - 0.3
    assert (tmp_path / "checkpoint" / "latest").exists()
