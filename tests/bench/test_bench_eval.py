"""bench/eval.py keeps working: one layer of the 135M shape scores a few synthetic questions end to end."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_one_layer():
    out = subprocess.run([sys.executable, "bench/eval.py", "--layers", "1", "--items", "8", "--min-tokens", "60",
                          "--max-tokens", "160"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = {line[:21].strip(): line[21:] for line in out.stdout.splitlines() if len(line) > 21}
    assert summary["questions"].startswith("8 x 4 choices, prompts ")
    assert float(summary["items/s"]) > 0 and summary["total time"].endswith(" s")
    assert summary["per-question jsonl"].startswith("8 lines")
    assert "compiling the scoring graph" in out.stderr and "scoring: 32/32 continuations (100%)" in out.stderr
