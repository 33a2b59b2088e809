"""bench/preprocess.py keeps working: a one-copy corpus runs end to end and prints its table (without transformers
and datasets, CI's case, the HF row says which package is missing)."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_small_table():
    out = subprocess.run([sys.executable, "bench/preprocess.py", "--scale", "1", "--workers", "2", "--repeats", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {line[:48].strip(): line[48:].split() for line in out.stdout.splitlines() if "->" in line[:48]}
    ours = rows["mindformers preprocess_data -> .bin/.idx"]
    assert int(ours[0]) > 200_000 and float(ours[2].replace(",", "")) > 0
    hf = rows["HF datasets load_dataset + map -> Arrow"]
    try:
        import datasets  # noqa: F401
        import transformers  # noqa: F401
        assert hf[0] == ours[0] and hf[-1] == "1.00x"  # same tokens from the same tokenizer.json
    except ImportError:
        assert hf[:2] == ["missing", "package"]
    assert "ms/batch" in out.stdout and "% of a 55M train step" in out.stdout
