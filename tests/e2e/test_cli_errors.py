"""run_mindformer.py: a user error is one line on stderr (exit 2) with its traceback kept in the log file; any
other exception is a bug and keeps its traceback on stderr and in the log (exit 1)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# runs run_mindformer.main with CausalLanguageModelingTrainer.train replaced by one that raises `error`
SCRIPT = r"""
import sys
import mindformers.trainer.causal_lm as causal_lm
import run_mindformer
def train(*args, **kwargs):
    raise {error}
causal_lm.CausalLanguageModelingTrainer.train = train
sys.exit(run_mindformer.main(["--config", "configs/llama/pretrain_llama_tiny.yaml", "--output_dir", sys.argv[1]]))
"""


def run(tmp_path, error: str):
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(error=error), str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, env=dict(os.environ, GLOG_v="3"))
    return out, (tmp_path / "log" / "rank_0.log").read_text(encoding="utf-8")


def test_a_user_error_is_one_line_with_the_traceback_in_the_log(tmp_path):
    out, log = run(tmp_path, 'ValueError("train_dataset: something the user can fix")')
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == "error: train_dataset: something the user can fix"
    assert "Traceback" in log and "something the user can fix" in log


def test_a_bug_keeps_its_traceback(tmp_path):
    out, log = run(tmp_path, 'KeyError("a bug deep inside")')
    assert out.returncode == 1 and "Traceback" in out.stderr and "KeyError: 'a bug deep inside'" in out.stderr
    assert "KeyError: 'a bug deep inside'" in log
