"""Exact resume after SIGKILL, a clean stop on SIGTERM, and resume errors (run_mindformer.py subprocesses)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = "configs/llama/pretrain_llama_tiny.yaml"
SMALL = ["--model.model_config.num_layers", "2", "--model.model_config.hidden_size", "128",
         "--model.model_config.intermediate_size", "344", "--model.model_config.n_kv_heads", "4",
         "--callbacks.0.per_print_times", "1"]


def args(out_dir, *extra):
    return [sys.executable, "run_mindformer.py", "--config", TINY, "--output_dir", str(out_dir), *SMALL, *extra]


def losses(out_dir):
    """step -> loss; a step logged twice (killed run, then resumed) keeps its last record."""
    records = [json.loads(line) for line in open(os.path.join(out_dir, "log", "train_metrics.jsonl"))]
    return {r["step"]: r["loss"] for r in records}


def wait_for(predicate, proc, timeout=300):
    start = time.time()
    while not predicate():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() - start < timeout, "timed out"
        time.sleep(0.2)


def run(cmd):
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, GLOG_v="3"))
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.mark.slow
def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    n = 6
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run(args(straight, "--runner_config.stop_step", str(2 * n), "--callbacks.1.save_checkpoint_steps", str(n)))

    proc = subprocess.Popen(args(killed, "--runner_config.stop_step", str(2 * n),
                                 "--callbacks.1.save_checkpoint_steps", str(n)),
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, GLOG_v="3"))
    latest = killed / "checkpoint" / "latest"
    wait_for(lambda: latest.exists(), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert latest.read_text().strip() == f"llama_tiny-step{n}"

    run(args(killed, "--runner_config.stop_step", str(2 * n), "--callbacks.1.save_checkpoint_steps", str(n),
             "--resume_training", "True", "--load_checkpoint", str(killed / "checkpoint")))
    expected, got = losses(straight), losses(killed)
    assert sorted(got) == list(range(1, 2 * n + 1))
    assert [got[s] for s in sorted(got)] == [expected[s] for s in sorted(expected)]  # bitwise


@pytest.mark.slow
def test_sigterm_saves_a_final_checkpoint_and_exits_cleanly(tmp_path):
    out_dir = tmp_path / "run"
    proc = subprocess.Popen(args(out_dir, "--runner_config.stop_step", "500", "--callbacks.1.save_checkpoint_steps",
                                 "1000"), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, GLOG_v="3"))
    metrics = out_dir / "log" / "train_metrics.jsonl"
    wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 3, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0
    last = max(losses(out_dir))
    assert last < 500
    state = json.loads((out_dir / "checkpoint" / f"llama_tiny-step{last}" / "state.json").read_text())
    assert state["step"] == last and state["consumed_samples"] == last * 8


def test_resume_without_a_checkpoint_is_an_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = subprocess.run(args(tmp_path / "o", "--resume_training", "True", "--load_checkpoint", str(empty)),
                         cwd=ROOT, capture_output=True, text=True, timeout=300, env=dict(os.environ, GLOG_v="3"))
    assert out.returncode == 2
    assert "holds no complete checkpoint to resume from" in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run(args(tmp_path / "o", "--resume_training", "True"), cwd=ROOT, capture_output=True,
                         text=True, timeout=300, env=dict(os.environ, GLOG_v="3"))
    assert out.returncode == 2 and "resume_training needs load_checkpoint" in out.stderr


def test_resume_with_a_changed_model_config_warns_naming_the_keys(tmp_path, caplog):
    import logging

    from mindformers.config import load_config
    from mindformers.trainer.causal_lm import CausalLanguageModelingTrainer

    def config(**extra):
        cfg = load_config(os.path.join(ROOT, TINY), {
            "output_dir": str(tmp_path), "runner_config.batch_size": 2,
            "model.model_config.num_layers": 1, "model.model_config.hidden_size": 32,
            "model.model_config.intermediate_size": 64, "model.model_config.n_kv_heads": 2,
            "model.model_config.num_heads": 4, "model.model_config.seq_length": 32, **extra})
        return cfg

    CausalLanguageModelingTrainer().train(config(**{"runner_config.stop_step": 2}))
    state = json.load(open(tmp_path / "checkpoint" / "llama_tiny-step2" / "state.json"))
    assert state["model"]["model_config"]["hidden_size"] == 32 and state["config_hash"]
    with caplog.at_level(logging.WARNING, logger="mindformers"):
        CausalLanguageModelingTrainer().train(config(**{
            "runner_config.stop_step": 3, "resume_training": True, "load_checkpoint": str(tmp_path / "checkpoint"),
            "model.model_config.rms_norm_eps": 1e-3}))
    assert "saved with a different model config: model.model_config.rms_norm_eps: 1e-05 -> 0.001" in caplog.text
