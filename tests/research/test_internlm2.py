"""research/internlm2: a family outside the package, loaded with --register_path; HF parity, round trip, runs."""
import json
import os
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest

from mindformers.config import load_config
from mindformers.models.hf import from_pretrained, read_weights_dir, save_pretrained
from mindformers.tools.register import register_path

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.join(ROOT, "research", "internlm2")
FIXTURE = os.path.join(HERE, "fixture")

register_path(HERE)  # what --register_path research/internlm2 does

pytestmark = pytest.mark.usefixtures("graph_mode")


def run(*args):
    return subprocess.run([sys.executable, "run_mindformer.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, env=dict(os.environ, GLOG_v="3"))


def test_without_register_path_the_error_says_how_to_load_it():
    out = run("--config", "research/internlm2/pretrain_internlm2_tiny.yaml", "--validate")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "unknown MODELS type 'InternLM2ForCausalLM'" in out.stderr and "--register_path" in out.stderr


def test_logits_match_the_reference():
    net = from_pretrained(FIXTURE)
    assert type(net).__name__ == "InternLM2ForCausalLM" and net.config.n_kv_heads == 2
    ids = np.load(os.path.join(FIXTURE, "input_ids.npy"))
    got = net(ms.Tensor(ids)).asnumpy()
    assert np.abs(got - np.load(os.path.join(FIXTURE, "logits.npy"))).max() <= 1e-4


def test_round_trip_is_bit_exact(tmp_path):
    save_pretrained(from_pretrained(FIXTURE), str(tmp_path), dtype="bfloat16")
    want, got = read_weights_dir(FIXTURE), read_weights_dir(str(tmp_path))
    assert sorted(got) == sorted(want) and "model.layers.0.attention.wqkv.weight" in got
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    config = json.load(open(tmp_path / "config.json", encoding="utf-8"))
    assert config["model_type"] == "internlm2" and config["architectures"] == ["InternLM2ForCausalLM"]


def test_real_size_config_counts_7_7b_parameters():
    from mindformers.parallel import build_shapes_only
    config = load_config(os.path.join(HERE, "predict_internlm2_7b.yaml"))
    total = sum(int(np.prod(p.shape)) for p in build_shapes_only(config).get_parameters())
    assert abs(total - 7.74e9) / 7.74e9 < 0.01, total


@pytest.mark.slow
def test_trains_and_predicts_through_run_mindformer(tmp_path):
    common = ["--register_path", "research/internlm2", "--output_dir", str(tmp_path)]
    out = run("--config", "research/internlm2/pretrain_internlm2_tiny.yaml", *common, "--run_mode", "train",
              "--runner_config.stop_step", "6", "--model.model_config.num_layers", "2")
    assert out.returncode == 0, out.stderr[-3000:]
    records = [json.loads(line) for line in open(tmp_path / "log" / "train_metrics.jsonl", encoding="utf-8")]
    assert [r["step"] for r in records] == list(range(1, 7)) and records[-1]["loss"] < records[0]["loss"]
    out = run("--config", "research/internlm2/pretrain_internlm2_tiny.yaml", *common, "--run_mode", "predict",
              "--load_checkpoint", str(tmp_path / "checkpoint"), "--model.model_config.num_layers", "2",
              "--predict_data", "Return the", "--options", "generation_config.max_new_tokens=4")
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(open(tmp_path / "predict_results.jsonl", encoding="utf-8").readline())["prompt"] == "Return the"
