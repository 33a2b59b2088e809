"""Safetensors checkpoints: layout, atomic save, pruning, strict loading."""
import json
import os

import numpy as np
import pytest
from mindspore import Parameter, Tensor, nn

from mindformers.checkpoint import (find_resume_checkpoint, list_checkpoints, load_train_state, load_weights,
                                    prune_checkpoints, read_state, resolve_checkpoint, save_checkpoint)


class Net(nn.Cell):
    def __init__(self, n=3):
        super().__init__()
        self.dense = nn.Dense(2, n)


class State(nn.Cell):
    """Stands in for a train step: holds the network plus state of its own."""

    def __init__(self, net):
        super().__init__(auto_prefix=False)  # as a train step: the network keeps its parameter names
        self.net = net
        self.moment = Parameter(Tensor(np.full((3, 2), 0.5, np.float32)), name="adam_m.dense.weight")
        self.scale = Parameter(Tensor(2.0), name="scale_sense")


def test_save_layout_latest_and_prune(tmp_path):
    net = Net()
    for step in (10, 20, 30):
        path = save_checkpoint(str(tmp_path), "m", step, net, State(net), {"epoch": 1, "consumed_samples": step})
    assert sorted(os.listdir(path)) == ["model.safetensors", "optimizer.safetensors", "state.json"]
    assert (tmp_path / "latest").read_text().strip() == "m-step30"
    assert read_state(path)["consumed_samples"] == 30
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # no temporary left behind
    prune_checkpoints(str(tmp_path), "m", keep=2)
    assert [os.path.basename(p) for p in list_checkpoints(str(tmp_path))] == ["m-step20", "m-step30"]
    assert resolve_checkpoint(str(tmp_path)).endswith("m-step30/model.safetensors")
    assert find_resume_checkpoint(str(tmp_path), True).endswith("m-step30")
    assert find_resume_checkpoint(str(tmp_path), "m-step20").endswith("m-step20")


def test_incomplete_directory_is_not_a_checkpoint(tmp_path):
    (tmp_path / ".m-step5.tmp-1").mkdir()       # a save killed half-way
    (tmp_path / "m-step7").mkdir()               # no state.json: never completed
    assert list_checkpoints(str(tmp_path)) == []
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        find_resume_checkpoint(str(tmp_path), True)


def test_weights_and_train_state_round_trip(tmp_path):
    net = Net()
    state = State(net)
    path = save_checkpoint(str(tmp_path), "m", 1, net, state)
    other = Net()
    other_state = State(other)
    other_state.moment.set_data(Tensor(np.zeros((3, 2), np.float32)))
    load_weights(other, path)
    load_train_state(other_state, path, other)
    assert np.array_equal(other.dense.weight.asnumpy(), net.dense.weight.asnumpy())
    assert np.array_equal(other_state.moment.asnumpy(), state.moment.asnumpy())
    assert float(other_state.scale.asnumpy()) == 2.0


def test_mismatched_weights_are_listed(tmp_path):
    path = save_checkpoint(str(tmp_path), "m", 1, Net(3))
    with pytest.raises(ValueError, match=r"shape mismatch: dense.bias: checkpoint \(3,\) vs model \(4,\); "
                                         r"dense.weight: checkpoint \(3, 2\) vs model \(4, 2\)"):
        load_weights(Net(4), path)

    class Extra(Net):
        def __init__(self):
            super().__init__()
            self.extra = nn.Dense(2, 2)
    with pytest.raises(ValueError, match="missing from checkpoint \\(2\\): extra.bias, extra.weight"):
        load_weights(Extra(), path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_weights(Net(), str(tmp_path / "nope"))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_weights(Net(), str(bad))


def test_state_json_is_plain_json(tmp_path):
    path = save_checkpoint(str(tmp_path), "m", 3, Net(), state={"config_hash": "abc"})
    data = json.loads(open(os.path.join(path, "state.json")).read())
    assert data["step"] == 3 and data["config_hash"] == "abc"


def test_checkpoint_monitor_async_save_writes_in_background(tmp_path):
    from mindspore.train import RunContext

    from mindformers.core.callback import CallbackParams, CheckpointMonitor

    net = Net()
    monitor = CheckpointMonitor(prefix="a", directory=str(tmp_path), save_checkpoint_steps=2, async_save=True,
                                keep_checkpoint_max=2)
    cb = CallbackParams(cur_step_num=0, cur_epoch_num=1, net_outputs=(Tensor(1.0),), network=net,
                        train_network=State(net), rank_id=0)
    ctx = RunContext(cb)
    for step in range(1, 6):
        cb.cur_step_num = step
        monitor.on_train_step_end(ctx)
        net.dense.weight.set_data(net.dense.weight + 1)  # the next step changes the weights at once
    monitor.on_train_end(ctx)
    assert [os.path.basename(p) for p in list_checkpoints(str(tmp_path))] == ["a-step4", "a-step5"]
    # step 4's file holds the weights as they were at step 4, not as later steps changed them
    from mindformers.checkpoint import read_weights
    w4 = read_weights(str(tmp_path / "a-step4" / "model.safetensors"))["dense.weight"]
    w5 = read_weights(str(tmp_path / "a-step5" / "model.safetensors"))["dense.weight"]
    assert np.allclose(w5 - w4, 2.0)  # step 5 was saved at train end, after one more change


@pytest.mark.parametrize("integrated", [True, False])
def test_checkpoint_monitor_rank_saving(tmp_path, integrated):
    """integrated_save True: only rank 0 writes; False: every rank writes under rank_<r>/."""
    from mindspore.train import RunContext

    from mindformers.core.callback import CallbackParams, CheckpointMonitor

    net = Net()
    for rank in (0, 1):
        monitor = CheckpointMonitor(prefix="a", directory=str(tmp_path), save_checkpoint_steps=1,
                                    integrated_save=integrated)
        cb = CallbackParams(cur_step_num=1, cur_epoch_num=1, net_outputs=(Tensor(1.0),), network=net,
                            train_network=State(net), rank_id=rank)
        monitor.on_train_step_end(RunContext(cb))
    if integrated:
        assert [os.path.basename(p) for p in list_checkpoints(str(tmp_path))] == ["a-step1"]
        assert not (tmp_path / "rank_1").exists()
    else:
        for rank in (0, 1):
            assert [os.path.basename(p) for p in list_checkpoints(str(tmp_path / f"rank_{rank}"))] == ["a-step1"]
        load_weights(Net(), str(tmp_path / "rank_1"))
