"""msrun_launcher.sh: upstream's positional forms (dry run), argument errors, and real msrun launches on CPU."""
import os
import shlex
import socket
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAUNCHER = os.path.join(ROOT, "msrun_launcher.sh")
PREFIX = "msrun_launcher.sh: "

# Each rank writes "<rank> <group size> <AllReduce of ones>"; an optional second argument delays the write.
WORKER = """
import sys
import time
import numpy as np
import mindspore as ms
from mindspore import Tensor, ops
from mindspore.communication import get_group_size, get_rank, init
ms.set_device("CPU")
init()
rank, size = get_rank(), get_group_size()
total = ops.AllReduce()(Tensor(np.ones(3, np.float32))).asnumpy().tolist()
time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 0)
with open(f"{sys.argv[1]}/rank_{rank}.txt", "w") as f:
    f.write(f"{rank} {size} {total}")
"""


def launch(*args, cwd=ROOT, dry=False, launcher=LAUNCHER, timeout=180, **env):
    """Run the launcher with args; dry=True only prints the msrun command."""
    # a suffix set in the caller's shell would change every expected log dir
    base = {k: v for k, v in os.environ.items() if k != "MF_LOG_SUFFIX"}
    env = dict(base, MF_LAUNCHER_DRY_RUN="1" if dry else "0", **env)
    return subprocess.run(["bash", launcher, *args], cwd=str(cwd), env=env, capture_output=True, text=True,
                          timeout=timeout)


def msrun_words(stdout: str) -> list:
    """The msrun command the launcher printed, split back into words."""
    lines = [line for line in stdout.splitlines() if line.startswith(PREFIX + "msrun ")]
    assert len(lines) == 1, stdout
    return shlex.split(lines[0][len(PREFIX):])


def flags_and_task(stdout: str):
    """Split the printed msrun command into its --flag=value dict and the task words after them."""
    words = msrun_words(stdout)[1:]
    flags = {}
    while words and words[0].startswith("--"):
        key, value = words.pop(0)[2:].split("=", 1)
        flags[key] = value
    return flags, words


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def defaults(**changes) -> dict:
    flags = {"worker_num": "8", "local_worker_num": "8", "master_addr": "127.0.0.1", "master_port": "8118",
             "node_rank": "0", "log_dir": "output/msrun_log", "join": "False", "cluster_time_out": "7200"}
    flags.update(changes)
    return flags


@pytest.mark.parametrize("args,expected", [
    ([], defaults()),
    (["2"], defaults(worker_num="2", local_worker_num="2")),
    (["4", "9000", "logs/x", "true", "60"],
     defaults(worker_num="4", local_worker_num="4", master_port="9000", log_dir="logs/x", join="True",
              cluster_time_out="60")),
    (["4", "2", "10.0.0.5", "9001", "1", "logs/y", "False", "-1"],
     defaults(worker_num="4", local_worker_num="2", master_addr="10.0.0.5", master_port="9001", node_rank="1",
              log_dir="logs/y", cluster_time_out="-1")),
], ids=["1-arg", "2-args", "6-args", "9-args"])
def test_positional_forms(args, expected, tmp_path):
    order = "run_mindformer.py --config configs/x.yaml --options 'a.b=x y' \"c=$(echo hi)\""
    out = launch(order, *args, cwd=tmp_path, dry=True)
    assert out.returncode == 0, out.stderr
    flags, task = flags_and_task(out.stdout)
    assert flags == expected
    # the script resolves against the repo root from any directory; quoted words stay whole and unexpanded
    assert task == [os.path.join(ROOT, "run_mindformer.py"), "--config", "configs/x.yaml",
                    "--options", "a.b=x y", "c=$(echo hi)"]
    assert f"{PREFIX}PYTHONPATH={ROOT}" in out.stdout


def test_script_resolves_against_cwd_first(tmp_path):
    (tmp_path / "run_mindformer.py").write_text("")
    out = launch("python run_mindformer.py --run_mode train", "1", cwd=tmp_path, dry=True)
    assert flags_and_task(out.stdout)[1] == ["python", str(tmp_path / "run_mindformer.py"), "--run_mode", "train"]


def test_root_wrapper_matches_scripts_launcher(tmp_path):
    args = ("run_mindformer.py --run_mode train", "2")
    via_root = launch(*args, cwd=tmp_path, dry=True)
    via_scripts = launch(*args, cwd=tmp_path, dry=True, launcher=os.path.join(ROOT, "scripts", "msrun_launcher.sh"))
    assert via_root.returncode == via_scripts.returncode == 0
    assert via_root.stdout == via_scripts.stdout


def test_log_suffix_and_existing_pythonpath(tmp_path):
    out = launch("run_mindformer.py", "2", cwd=tmp_path, dry=True, MF_LOG_SUFFIX="try1", PYTHONPATH="/opt/x")
    assert flags_and_task(out.stdout)[0]["log_dir"] == "output/msrun_log_try1"
    assert f"{PREFIX}PYTHONPATH={ROOT}:/opt/x" in out.stdout


def test_integers_are_read_in_base_10(tmp_path):
    out = launch("run_mindformer.py", "08", "09000", "logs", "True", "-010", cwd=tmp_path, dry=True)
    flags = flags_and_task(out.stdout)[0]
    assert (flags["worker_num"], flags["master_port"], flags["cluster_time_out"]) == ("8", "9000", "-10")


@pytest.mark.parametrize("args,message", [
    ([], "expected 1, 2, 6 or 9 arguments, got 0"),
    (["run_mindformer.py", "2", "3"], "expected 1, 2, 6 or 9 arguments, got 3"),
    (["run_mindformer.py", "two"], "WORKER_NUM must be an integer, got 'two'"),
    (["run_mindformer.py", "0"], "WORKER_NUM must be an integer in [1, inf], got '0'"),
    (["run_mindformer.py", "2", "80x", "logs", "True", "10"], "MASTER_PORT must be an integer, got '80x'"),
    (["run_mindformer.py", "2", "80", "logs", "True", "10"], "MASTER_PORT must be an integer in [1024, 65535]"),
    (["run_mindformer.py", "2", "8000", "logs", "maybe", "10"], "JOIN must be True or False, got 'maybe'"),
    (["run_mindformer.py", "2", "8000", "logs", "True", "1.5"], "CLUSTER_TIME_OUT must be an integer, got '1.5'"),
    (["run_mindformer.py", "2", "x", "127.0.0.1", "8000", "0", "logs", "True", "10"],
     "LOCAL_WORKER must be an integer, got 'x'"),
    (["run_mindformer.py", "2", "3", "127.0.0.1", "8000", "0", "logs", "True", "10"],
     "LOCAL_WORKER (3) must not exceed WORKER_NUM (2)"),
    (["run_mindformer.py", "2", "1", "127.0.0.1", "8000", "first", "logs", "True", "10"],
     "NODE_RANK must be an integer, got 'first'"),
    (["no_such_script.py", "2"], "script 'no_such_script.py' not found"),
    (["run_mindformer.py --options 'a.b=c", "2"], "cannot parse EXECUTE_ORDER (No closing quotation)"),
])
def test_bad_arguments_exit_1_with_one_clear_line(args, message):
    out = launch(*args, dry=True)
    assert out.returncode == 1
    assert message in out.stderr
    assert out.stdout == ""
    if "arguments, got" in message:
        assert "Usage:" in out.stderr and out.stderr.count("[EXECUTE_ORDER]") == 4
    else:
        assert out.stderr.count("\n") == 1, out.stderr


def test_help_prints_usage():
    out = launch("--help")
    assert out.returncode == 0 and "Usage:" in out.stdout


@pytest.mark.parametrize("workers", [1, 2])
def test_real_launch_on_cpu(workers, tmp_path):
    (tmp_path / "worker.py").write_text(WORKER)
    logs = tmp_path / "logs"
    out = launch(f"worker.py {tmp_path}", str(workers), str(free_port()), str(logs), "True", "120", cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for rank in range(workers):
        assert (tmp_path / f"rank_{rank}.txt").read_text() == f"{rank} {workers} {[float(workers)] * 3}"
        assert (logs / f"worker_{rank}.log").exists()
    assert (logs / "scheduler.log").exists()


def test_failing_script_fails_the_launch(tmp_path):
    (tmp_path / "fail.py").write_text("import sys\nsys.exit(3)\n")
    logs = tmp_path / "logs"
    out = launch("fail.py", "1", str(free_port()), str(logs), "True", "60", cwd=tmp_path)
    assert out.returncode != 0
    assert (logs / "worker_0.log").exists()


def test_without_join_msrun_returns_while_workers_run(tmp_path):
    """The upstream default JOIN=False: exit 0 right after spawning; the worker finishes in the background."""
    (tmp_path / "worker.py").write_text(WORKER)
    logs = tmp_path / "logs"
    out = launch(f"worker.py {tmp_path} 5", "1", str(free_port()), str(logs), "False", "60", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "JOIN=False" in out.stdout
    result = tmp_path / "rank_0.txt"
    assert not result.exists()
    deadline = time.time() + 120
    while not result.exists() and time.time() < deadline:
        time.sleep(0.5)
    assert result.exists(), (logs / "worker_0.log").read_text()[-3000:]
    assert (logs / "worker_0.log").exists()
