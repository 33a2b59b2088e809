"""pretrained_model_dir in the trainer: predict from the shipped HF YAML, finetune starting from HF weights."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from mindformers.config import load_config
from mindformers.models.hf import read_weights_dir, tokenizer_from_hf
from mindformers.generation.predict import predict_generation_config
from mindformers.trainer.builders import build_model, build_tokenizer
from mindformers.trainer.causal_lm import CausalLanguageModelingTrainer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HF_YAML = "configs/llama/predict_llama_tiny_hf.yaml"
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "hf_tiny_llama")


def test_shipped_hf_predict_yaml_runs(tmp_path):
    cmd = [sys.executable, "run_mindformer.py", "--config", HF_YAML, "--output_dir", str(tmp_path),
           "--predict_data", "Return the", "--generation_config.max_new_tokens", "4"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, GLOG_v="3"))
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [json.loads(line) for line in open(tmp_path / "predict_results.jsonl", encoding="utf-8")]
    assert [r["prompt"] for r in rows] == ["Return the"] and rows[0]["output"]


def test_build_model_and_tokenizer_from_the_directory():
    config = load_config(os.path.join(ROOT, HF_YAML), {"model.model_config.seq_length": 32})
    network = build_model(config)
    assert network.config.seq_length == 32 and network.config.hidden_size == 32 and network.config.use_past
    weights = read_weights_dir(FIXTURE)
    for p in network.get_parameters():
        np.testing.assert_array_equal(p.asnumpy(), weights[p.name])
    assert build_tokenizer(config).vocab_size == tokenizer_from_hf(FIXTURE).vocab_size == 2048


def test_finetune_starts_from_hf_weights(tmp_path):
    config = load_config(os.path.join(ROOT, "configs/llama/finetune_llama_tiny.yaml"),
                         {"output_dir": str(tmp_path), "load_checkpoint": "", "pretrained_model_dir": FIXTURE,
                          "runner_config.stop_step": 2, "runner_config.batch_size": 2,
                          "callbacks": [{"type": "MFLossMonitor", "per_print_times": 1}]})
    # config.json supplies the sizes; the YAML keeps only what it means to override
    config.model.model_config = {"type": "LlamaConfig", "seq_length": 32}
    history = CausalLanguageModelingTrainer().train(config, is_finetune=True)
    assert len(history) == 2 and all(np.isfinite(r["loss"]) for r in history)


def test_generation_config_json_gives_defaults_and_the_yaml_wins(tmp_path):
    model_dir = tmp_path / "hf"
    shutil.copytree(FIXTURE, model_dir)
    with open(model_dir / "generation_config.json", "w", encoding="utf-8") as f:
        json.dump({"do_sample": True, "temperature": 0.6, "top_p": 0.9, "eos_token_id": [2, 7],
                   "max_new_tokens": 11, "transformers_version": "5.23.0"}, f)
    config = load_config(os.path.join(ROOT, HF_YAML), {"pretrained_model_dir": str(model_dir)})
    gen = predict_generation_config(config)  # the YAML sets max_new_tokens 16 and do_sample False
    assert (gen.do_sample, gen.max_new_tokens, gen.temperature, gen.top_p, gen.eos_token_id) == \
        (False, 16, 0.6, 0.9, [2, 7])
    config.generation_config = {}
    assert predict_generation_config(config).do_sample is True
    (model_dir / "generation_config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="generation_config.json: not valid JSON"):
        predict_generation_config(config)
