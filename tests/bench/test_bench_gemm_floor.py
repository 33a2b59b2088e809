"""bench/gemm_floor.py: the GEMMs it times are exactly the step's matmuls, and its table prints (with or
without torch)."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench"))


@pytest.mark.parametrize("size", ["tiny", "55m", "135m"])
def test_gemm_flops_match_the_step_flop_count(size):
    import gemm_floor
    from train import SIZES, model_config
    cfg, s = model_config(size), SIZES[size]
    tokens = s["batch"] * s["seq"]
    flops = sum(2 * count * batch * M * K * N for _, count, batch, M, K, N in gemm_floor.step_gemms(size))
    # PaLM's count (flops_per_token) also counts the RMSNorm weights as matmul parameters; nothing else differs
    norm_params = (2 * cfg.num_layers + 1) * cfg.hidden_size
    assert flops == (cfg.flops_per_token() - 6 * norm_params) * tokens


def test_tiny_table():
    out = subprocess.run([sys.executable, "bench/gemm_floor.py", "--size", "tiny", "--reps", "1"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ") and "forward" in line]
    assert len(rows) == 6  # five projection groups and the lm_head
    assert float(rows[0].split("|")[4]) > 0  # MindSpore's time in ms
    assert "tokens/s for any fp32 implementation of this step here" in out.stdout
