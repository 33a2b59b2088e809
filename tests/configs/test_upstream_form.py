"""Files in upstream 2.x's form: our own fixtures with its structure (tests/fixtures/upstream_2x) and the shipped
configs/qwen3/finetune_qwen3.yaml validate, run two steps on CPU, or name every Ascend-only setting at once."""
import json
import os
import subprocess
import sys

import pytest

from mindformers.tools.preprocess_data import main as preprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join("tests", "fixtures", "upstream_2x")


def run(*args, timeout=600):
    return subprocess.run([sys.executable, "run_mindformer.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, GLOG_v="3"))


def steps(out_dir):
    with open(os.path.join(out_dir, "log", "train_metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_shipped_qwen3_finetune_in_upstream_form_validates_and_runs_two_steps(tmp_path):
    config = "configs/qwen3/finetune_qwen3.yaml"
    out = run("--config", config, "--validate")
    assert out.returncode == 0 and out.stdout.strip() == f"{config}: OK", out.stderr[-2000:]
    out = run("--config", config, "--runner_config.stop_step", "2", "--output_dir", str(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "compute_dtype: bfloat16 has no CPU kernels" in out.stderr and "Traceback" not in out.stderr
    records = steps(tmp_path)
    assert [r["step"] for r in records] == [1, 2] and all(r["loss"] < 9 for r in records)


def test_pretrain_in_upstream_form_with_a_megatron_dataset_runs_two_steps(tmp_path):
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": f"document {i} of a small pretraining corpus about rivers"}) + "\n"
                           for i in range(200)), encoding="utf-8")
    prefix = str(tmp_path / "megatron" / "docs")
    assert preprocess(["--input", str(src), "--output-prefix", prefix, "--tokenizer",
                       "mindformers/assets/tiny_corpus/tokenizer.model", "--workers", "1", "--quiet"]) == 0
    out = run("--config", os.path.join(FIXTURES, "pretrain_qwen3_2x.yaml"), "--runner_config.stop_step", "2",
              "--output_dir", str(tmp_path / "out"),
              "--options", f"train_dataset.data_loader.config.data_path=['1', '{prefix}']")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "qwen3 (Qwen3ForCausalLM)" in out.stderr
    assert [r["step"] for r in steps(tmp_path / "out")] == [1, 2]


def test_ascend_only_settings_are_all_named_with_their_lines_before_any_work():
    path = os.path.join(FIXTURES, "ascend_settings_2x.yaml")
    out = run("--config", path, "--validate", timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if path in line]
    for key in ("optimizer.swap", "parallel_config.use_seq_parallel", "parallel_config.expert_parallel",
                "swap_config.swap", "parallel.parallel_mode", "parallel_config.model_parallel",
                "parallel_config.pipeline_stage", "model_config.hidden_dropout"):
        assert sum(key in line for line in errors) == 1, key
    assert len(errors) == 8


@pytest.mark.parametrize("path", [os.path.join(FIXTURES, "sectioned_2x.yaml")])
def test_the_sectioned_form_is_refused_with_one_message(path):
    out = run("--config", path, "--validate", timeout=120)
    lines = [line for line in out.stderr.splitlines() if line.strip() and " INFO " not in line]
    assert out.returncode == 2 and len(lines) == 1 and "sectioned config form" in lines[0]
