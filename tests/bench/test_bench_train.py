"""bench/train.py keeps working: the tiny size runs end to end and prints its table (CI has no torch: those rows
say so instead of failing)."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_tiny_table():
    out = subprocess.run([sys.executable, "bench/train.py", "--size", "tiny", "--steps", "3", "--gemm-floor", "--impl",
                          "ours_step", "ours_trainer", "torch_eager"], cwd=ROOT, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {line.split("|")[1].strip(): line for line in out.stdout.splitlines() if line.startswith("| ")}
    assert "| implementation | tokens/s | vs PyTorch eager | MFU | peak RSS (GiB) |" in out.stdout
    for label in ("mindformers train step (GRAPH, jit)", "mindformers Trainer (full loop)"):
        cells = [c.strip() for c in rows[label].split("|")[2:-1]]
        assert float(cells[0]) > 0 and cells[2].endswith("%") and float(cells[3]) > 0
    torch_row = rows["HF transformers + PyTorch eager"]
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
        assert "1.00x" in torch_row
    except ImportError:
        assert "not run:" in torch_row and "is not installed" in torch_row
    assert "tokens/s for any fp32 implementation of this step here" in out.stdout
    assert "the bound is" in out.stdout and "x mindformers train step (GRAPH, jit)" in out.stdout
