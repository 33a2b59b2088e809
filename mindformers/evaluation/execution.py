"""Running generated code for HumanEval-style pass@k: a subprocess per candidate, a timeout, no network.

Each candidate program (prompt + completion + the task's tests + `check(entry_point)`) runs with `python -I`
in a fresh temporary directory with a minimal environment. Where the `unshare` tool can create a network
namespace (root, or user namespaces allowed) the program runs inside one with no interfaces up, so it has no
network at all; otherwise it runs without that isolation and the report says so.
"""
import functools
import math
import os
import shutil
import subprocess
import sys
import tempfile
from typing import List, Tuple


@functools.lru_cache(maxsize=1)
def network_isolation() -> List[str]:
    """The command prefix that removes network access, or [] where it cannot be had."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return []
    for prefix in ([unshare, "--net"], [unshare, "--user", "--map-root-user", "--net"]):
        try:
            probe = subprocess.run([*prefix, sys.executable, "-c", "pass"], capture_output=True, timeout=10)
            ok = probe.returncode == 0
        except (OSError, subprocess.SubprocessError):
            ok = False
        if ok:
            return prefix
    return []


def run_program(source: str, timeout: float = 10.0) -> Tuple[bool, str]:
    """(passed, reason): whether `source` exits 0 within `timeout` seconds."""
    with tempfile.TemporaryDirectory(prefix="mf_exec_") as tmp:
        path = os.path.join(tmp, "candidate.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(source)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONHASHSEED": "0", "HOME": tmp}
        try:
            proc = subprocess.run([*network_isolation(), sys.executable, "-I", path], cwd=tmp, env=env,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return False, f"timed out after {timeout:g} s"
        if proc.returncode == 0:
            return True, "passed"
        last = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return False, last[:200]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n - c, k) / C(n, k) for n samples of which c pass."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per task, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))
