"""The train loop: eval during training, non-finite steps skipped or stopping the run."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = "configs/llama/pretrain_llama_tiny.yaml"
SMALL = ["--model.model_config.num_layers", "1", "--model.model_config.hidden_size", "64",
         "--model.model_config.intermediate_size", "128", "--model.model_config.num_heads", "4",
         "--model.model_config.n_kv_heads", "2", "--callbacks.0.per_print_times", "1"]

# A registered model whose loss is NaN at its third training step (a Parameter counts the calls).
NAN_MODEL = '''
import mindspore as ms
from mindspore import Parameter, Tensor, ops
from mindformers.models.llama import LlamaForCausalLM
from mindformers.tools.register import MindFormerModuleType, MindFormerRegister


@MindFormerRegister.register(MindFormerModuleType.MODELS)
class NaNAtThirdStepLlama(LlamaForCausalLM):
    def __init__(self, config):
        super().__init__(config)
        self.calls = Parameter(Tensor(0, ms.int32), name="test_calls", requires_grad=False)

    def construct(self, input_ids, labels=None):
        loss = super().construct(input_ids, labels)
        if self.training:
            ops.assign_add(self.calls, Tensor(1, ms.int32))
            loss = loss * ops.select(self.calls == 3, Tensor(float("nan"), ms.float32), Tensor(1.0, ms.float32))
        return loss
'''


def run(tmp_path, *extra):
    (tmp_path / "nan_model.py").write_text(NAN_MODEL)
    cmd = [sys.executable, "run_mindformer.py", "--config", TINY, "--output_dir", str(tmp_path / "out"), *SMALL,
           *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=dict(os.environ, GLOG_v="3"))


def records(tmp_path, name="train_metrics.jsonl"):
    return [json.loads(line) for line in open(tmp_path / "out" / "log" / name)]


def test_eval_during_training(tmp_path):
    out = run(tmp_path, "--runner_config.stop_step", "6", "--do_eval", "True", "--options", "eval_step_interval=3")
    assert out.returncode == 0, out.stderr[-3000:]
    evals = records(tmp_path, "eval_metrics.jsonl")
    assert [e["step"] for e in evals] == [3, 6] and evals[1]["loss"] < evals[0]["loss"]
    assert "eval at step 3" in out.stderr


def test_non_finite_step_is_skipped_and_counted(tmp_path):
    out = run(tmp_path, "--register_path", str(tmp_path / "nan_model.py"), "--model.arch.type", "NaNAtThirdStepLlama",
              "--runner_config.stop_step", "5")
    assert out.returncode == 0, out.stderr[-3000:]
    steps = records(tmp_path)
    assert [r["overflow"] for r in steps] == [False, False, True, False, False]
    assert "1 steps were skipped" in out.stderr


def test_non_finite_step_stops_with_a_checkpoint_when_asked(tmp_path):
    out = run(tmp_path, "--register_path", str(tmp_path / "nan_model.py"), "--model.arch.type", "NaNAtThirdStepLlama",
              "--runner_config.stop_step", "5", "--callbacks.0.check_for_nan_in_loss_and_grad", "True")
    assert out.returncode == 2
    assert "stopped by check_for_nan_in_loss_and_grad" in out.stderr and "Traceback" not in out.stderr
    assert (tmp_path / "out" / "checkpoint" / "llama_tiny-step3" / "model.safetensors").exists()
    assert len(records(tmp_path)) == 3


def test_two_runs_with_the_same_seed_are_bit_identical(tmp_path):
    losses = []
    for name in ("a", "b"):
        out = subprocess.run([sys.executable, "run_mindformer.py", "--config", TINY,
                              "--output_dir", str(tmp_path / name),
                              *SMALL, "--runner_config.stop_step", "5", "--options", "train_precision_sync=True"],
                             cwd=ROOT, capture_output=True, text=True, timeout=600, env=dict(os.environ, GLOG_v="3"))
        assert out.returncode == 0, out.stderr[-3000:]
        losses.append([json.loads(line)["loss"] for line in open(tmp_path / name / "log" / "train_metrics.jsonl")])
    assert len(losses[0]) == 5 and losses[0] == losses[1]
