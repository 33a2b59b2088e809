"""The copyable configs for real Hugging Face models (SmolLM2-135M, Qwen2.5-0.5B, Qwen3-0.6B): their only inputs
are pretrained_model_dir and the data, their model_config holds no sizes, and a size a layered YAML sets against
config.json is an error naming both values and both files."""
import os

import pytest

from mindformers import Trainer
from mindformers.config import load_config
from mindformers.models.hf.pretrained import SIZE_KEYS
from mindformers.trainer.preflight import model_section_errors

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_QWEN3 = "mindformers/assets/tiny_qwen3"   # hidden 128, 2 layers, 4/2 heads (scripts/build_tiny_qwen3.py)
MODELS = [("llama", "smollm2_135m", "predict_smollm2_135m"), ("qwen2", "qwen2_5_0_5b", "predict_qwen2_5_0_5b"),
          ("qwen3", "qwen3_0_6b", "predict_qwen3_0_6b_hf")]
FILES = [f"configs/{family}/{name}.yaml" for family, stem, predict in MODELS
         for name in (f"finetune_{stem}", f"lora_{stem}", predict)]


@pytest.mark.parametrize("path", FILES)
def test_only_the_directory_and_the_data_are_left_to_the_user(path):
    config = load_config(os.path.join(ROOT, path))
    assert config.pretrained_model_dir.startswith("/path/to/")
    model_config = dict(config.model.model_config)
    assert not set(model_config) & set(SIZE_KEYS) and "type" not in model_config
    assert "max_call_depth" not in (config.get("context") or {})
    if config.run_mode == "finetune":
        assert config.train_dataset.data_loader.data_files == "mindformers/assets/tiny_instruct/alpaca.json"
        # with a real directory the configs check clean (the tiny Qwen3 stands in for each family's)
        config.pretrained_model_dir = TINY_QWEN3
        assert model_section_errors(config) == []


def test_a_size_the_yaml_contradicts_names_both_values_and_files(tmp_path):
    child = tmp_path / "mine.yaml"
    child.write_text("base_config: " + os.path.join(ROOT, "configs/qwen3/finetune_qwen3_0_6b.yaml") + "\n"
                     "model:\n  model_config:\n    hidden_size: 64\n    num_layers: 2\n    num_attention_heads: 8\n"
                     "    seq_length: 64\n    max_position_embedding: 512\n")
    config = load_config(str(child), {"pretrained_model_dir": TINY_QWEN3})
    errors = model_section_errors(config)
    # num_layers agrees with config.json; seq_length and max_position_embedding are intended overrides
    assert errors == [
        f"{child}:4: model_config.hidden_size: 64 contradicts {TINY_QWEN3}/config.json (hidden_size: 128); "
        f"config.json sets the model's sizes: remove the key from the YAML",
        f"{child}:6: model_config.num_attention_heads: 8 contradicts {TINY_QWEN3}/config.json "
        f"(num_attention_heads: 4); config.json sets the model's sizes: remove the key from the YAML"]
    # a tiny config's sizes under a Hugging Face directory (what the tiny alpaca config's old comment suggested)
    tiny = load_config(os.path.join(ROOT, "configs/llama/finetune_llama_tiny_alpaca.yaml"),
                       {"pretrained_model_dir": "tests/fixtures/hf_tiny_llama", "load_checkpoint": ""})
    errors = model_section_errors(tiny)
    assert errors and all("pretrain_llama_tiny.yaml:" in e and "hf_tiny_llama/config.json" in e for e in errors)


def test_finetune_config_trains_two_steps_on_a_tiny_hf_directory(tmp_path):
    config = load_config(os.path.join(ROOT, "configs/qwen3/finetune_qwen3_0_6b.yaml"),
                         {"pretrained_model_dir": TINY_QWEN3, "output_dir": str(tmp_path), "runner_config.stop_step": 2,
                          "runner_config.gradient_accumulation_steps": 1, "model.model_config.seq_length": 64,
                          "callbacks": [{"type": "MFLossMonitor"}]})
    history = Trainer(args=config).train()
    assert len(history) == 2 and all(h["loss"] > 0 for h in history)
