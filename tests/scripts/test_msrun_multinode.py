"""Two "nodes" on one machine: the launcher's node-rank/master-address form, each node in its own network namespace.

Run on the host's own network, two msrun invocations with the same local MASTER_ADDR both start a scheduler and
one loses the race for the port (see the note in scripts/msrun_launcher.sh). Network namespaces joined by a veth
pair give each "node" its own address, as on two machines: only node 0 owns MASTER_ADDR and runs the scheduler.
Creating namespaces needs root (CAP_NET_ADMIN) and iproute2; without them the tests skip and say why.
"""
import json
import os
import random
import shutil
import subprocess
import sys

import pytest

from test_msrun_launcher import LAUNCHER, ROOT, WORKER, free_port

pytestmark = pytest.mark.slow


def _ip(*args):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


@pytest.fixture
def two_hosts():
    """Two namespaces joined by a veth pair; yields [(namespace, address)] for node 0 and node 1."""
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2's `ip` to create network namespaces")
    tag = f"mf{os.getpid() % 100000}"
    subnet = f"10.{random.randint(64, 250)}.{random.randint(0, 250)}"
    hosts = [(f"{tag}a", f"{subnet}.1"), (f"{tag}b", f"{subnet}.2")]
    made = []
    try:
        for ns, _ in hosts:
            out = _ip("netns", "add", ns)
            if out.returncode != 0:
                pytest.skip(f"cannot create network namespaces here (needs root/CAP_NET_ADMIN): {out.stderr.strip()}")
            made.append(ns)
        steps = [("link", "add", f"{tag}va", "type", "veth", "peer", "name", f"{tag}vb")]
        for (ns, addr), dev in zip(hosts, (f"{tag}va", f"{tag}vb")):
            steps += [("link", "set", dev, "netns", ns), ("-n", ns, "addr", "add", f"{addr}/24", "dev", dev),
                      ("-n", ns, "link", "set", dev, "up"), ("-n", ns, "link", "set", "lo", "up")]
        for step in steps:
            out = _ip(*step)
            if out.returncode != 0:
                pytest.skip(f"cannot wire the namespaces (ip {' '.join(step)}): {out.stderr.strip()}")
        yield hosts
    finally:
        for ns in made:
            _ip("netns", "del", ns)  # takes its end of the veth pair with it


def _launch_nodes(hosts, execute_order, cwd, logs, timeout=600):
    """Node 1 in the background, node 0 in the foreground, both with JOIN=True; (rc0, rc1, output)."""
    master, port = hosts[0][1], str(free_port())
    env = {k: v for k, v in os.environ.items() if k != "MF_LOG_SUFFIX"}
    env.update(MF_LAUNCHER_DRY_RUN="0", GLOG_v="3")

    def cmd(node):
        ns = hosts[node][0]
        return ["ip", "netns", "exec", ns, "bash", LAUNCHER, execute_order, "2", "1", master, port, str(node),
                str(logs / f"node{node}"), "True", "300"]

    other = subprocess.Popen(cmd(1), cwd=str(cwd), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    try:
        first = subprocess.run(cmd(0), cwd=str(cwd), env=env, capture_output=True, text=True, timeout=timeout)
        second_out, _ = other.communicate(timeout=timeout)
    finally:
        if other.poll() is None:
            other.kill()
    return first.returncode, other.returncode, first.stdout[-3000:] + first.stderr[-3000:] + second_out[-3000:]


def test_two_nodes_one_worker_each_join_one_cluster(two_hosts, tmp_path):
    (tmp_path / "worker.py").write_text(WORKER)
    rc0, rc1, output = _launch_nodes(two_hosts, f"worker.py {tmp_path}", tmp_path, tmp_path / "logs")
    assert (rc0, rc1) == (0, 0), output
    for rank in range(2):  # AllReduce over both nodes: each rank sums two ones
        assert (tmp_path / f"rank_{rank}.txt").read_text() == f"{rank} 2 [2.0, 2.0, 2.0]"
    assert (tmp_path / "logs" / "node0" / "scheduler.log").exists()
    assert not (tmp_path / "logs" / "node1" / "scheduler.log").exists()  # only node 0 owns MASTER_ADDR
    assert (tmp_path / "logs" / "node0" / "worker_0.log").exists()
    assert (tmp_path / "logs" / "node1" / "worker_1.log").exists()


def test_two_node_data_parallel_training(two_hosts, tmp_path):
    out_dir = tmp_path / "dp"
    order = (f"run_mindformer.py --config configs/llama/pretrain_llama_tiny.yaml --use_parallel True "
             f"--output_dir {out_dir} --runner_config.stop_step 3 --runner_config.batch_size 4")
    rc0, rc1, output = _launch_nodes(two_hosts, order, ROOT, tmp_path / "logs")
    assert (rc0, rc1) == (0, 0), output
    records = [json.loads(line) for line in open(out_dir / "log" / "train_metrics.jsonl", encoding="utf-8")]
    assert [r["step"] for r in records] == [1, 2, 3] and all(r["loss"] == r["loss"] for r in records)
    assert (out_dir / "checkpoint" / "llama_tiny-step3" / "model.safetensors").exists()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
