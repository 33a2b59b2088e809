"""MFTrainOneStepCell under 2-process data parallel (msrun, CPU) equals one process on the whole batch."""
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np

from test_train_one_step import X, Y, make_cell, net_weights

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WORKER = textwrap.dedent("""
    import sys
    import numpy as np
    import mindspore as ms
    from mindspore.communication import get_rank, init
    sys.path[:0] = [{repo!r}, {tests!r}]
    from test_train_one_step import X, Y, make_cell, net_weights  # sets GRAPH mode on CPU

    init()
    ms.set_auto_parallel_context(parallel_mode="data_parallel", gradients_mean=True)
    rank = get_rank()
    cell = make_cell()
    for _ in range(3):
        loss, overflow, scale, norm = cell(X[rank * 4:(rank + 1) * 4], Y[rank * 4:(rank + 1) * 4])
    np.save({out!r} + f"/rank{{rank}}.npy", np.append(net_weights(cell), [norm.asnumpy(), loss.asnumpy()]))
""")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_ranks_match_single_process_on_the_whole_batch(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(repo=REPO, tests=os.path.dirname(os.path.abspath(__file__)), out=str(tmp_path)))
    cmd = [sys.executable, "-m", "mindspore.parallel.cluster.run", "--worker_num=2", "--local_worker_num=2",
           f"--master_port={_free_port()}", f"--log_dir={tmp_path / 'logs'}", "--join=True", str(script)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=240, check=False)
    logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log")) if (tmp_path / "logs").exists() else ""
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:] + logs[-3000:]

    rank0, rank1 = np.load(tmp_path / "rank0.npy"), np.load(tmp_path / "rank1.npy")
    cell = make_cell()
    for _ in range(3):
        loss, _, _, norm = cell(X, Y)
    single = np.append(net_weights(cell), [norm.asnumpy(), loss.asnumpy()])
    np.testing.assert_array_equal(rank0, rank1)
    # includes the global norm (gradients are averaged, not summed) and the loss each rank reports: the mean over
    # the ranks, i.e. the whole batch's
    assert np.abs(rank0 - single).max() < 1e-6
