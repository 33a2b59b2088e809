"""use_parallel with parallel_config on CPU: data parallel and dp x mp tensor parallel run; any other layout stops
with a message naming Ascend."""
import logging

import mindspore.communication as comm
import pytest

from mindformers.config import MindFormerConfig
from mindformers.core.context import build_context, semi_auto_dataset_keys


@pytest.fixture
def fake_cluster(monkeypatch):
    """Two workers as msrun would announce them, without starting communication."""
    monkeypatch.setenv("MS_WORKER_NUM", "2")
    monkeypatch.setattr(comm, "init", lambda *a, **k: None)
    monkeypatch.setattr(comm, "get_rank", lambda *a, **k: 0)
    monkeypatch.setattr(comm, "get_group_size", lambda *a, **k: 2)
    yield
    import mindspore as ms
    ms.reset_auto_parallel_context()


def config(mode, **parallel_config):
    return MindFormerConfig(use_parallel=True, context={"device_target": "CPU", "mode": 0},
                            parallel={"parallel_mode": mode}, parallel_config=parallel_config)


def test_data_parallel_runs_on_cpu(fake_cluster):
    env = build_context(config(0, data_parallel=2))
    assert (env["rank_id"], env["device_num"]) == (0, 2)


def test_model_parallel_in_data_parallel_mode_runs_as_tensor_parallel(fake_cluster):
    env = build_context(config(0, model_parallel=2))  # parallel/tensor_parallel.py: dp 1 x mp 2 = 2 workers
    assert (env["rank_id"], env["device_num"]) == (0, 2)
    with pytest.raises(ValueError, match=r"data_parallel \(2\) x model_parallel \(2\) .* = 4, but 2 devices run"):
        build_context(config(0, data_parallel=2, model_parallel=2))
    with pytest.raises(ValueError, match=r"parallel_config \{'pipeline_stage': 2\} needs parallel.parallel_mode: 1"):
        build_context(config(0, pipeline_stage=2, micro_batch_num=2))


def test_parallel_optimizer_in_data_parallel_mode_is_logged_as_having_no_effect(fake_cluster, caplog):
    import mindspore as ms
    cfg = config(0, data_parallel=2)
    cfg.parallel.enable_parallel_optimizer = True
    with caplog.at_level(logging.INFO, logger="mindformers"):
        build_context(cfg)
    assert not ms.get_auto_parallel_context("enable_parallel_optimizer")  # MindSpore refuses it on CPU here
    assert any("enable_parallel_optimizer: True has no effect in data_parallel mode" in r.getMessage()
               for r in caplog.records)


def test_semi_auto_parallel_on_cpu_names_ascend(fake_cluster):
    with pytest.raises(ValueError, match=r"semi_auto_parallel\) needs Ascend devices .*"
                                           r"python -m mindformers.parallel"):
        build_context(config(1, data_parallel=1, model_parallel=2))


def test_semi_auto_mesh_must_fit_the_workers(fake_cluster):
    with pytest.raises(ValueError, match=r"= 4, but 2 devices run"):
        build_context(config(1, data_parallel=2, model_parallel=2))


def test_bad_parallel_mode_value(fake_cluster):
    with pytest.raises(ValueError, match=r"parallel.parallel_mode: 7 is not one of 0 \(data_parallel\)"):
        build_context(config(7))


def test_parallel_config_without_use_parallel_warns(caplog):
    cfg = MindFormerConfig(use_parallel=False, context={"device_target": "CPU", "mode": 0},
                           parallel_config={"data_parallel": 2, "model_parallel": 4})
    with caplog.at_level(logging.WARNING, logger="mindformers"):
        build_context(cfg)
    assert "parallel_config asks for 8 devices (dp=2 mp=4 pp=1 cp=1) but use_parallel is False" in caplog.text


def test_dataset_strategy_reaches_mindspore_as_upstream_passes_it(caplog):
    """MindSpore takes only a str or tuples: a YAML list becomes tuples; with full_batch: True it is dropped, as
    upstream resets it (every rank reads the whole batch: parallel/batch.py)."""
    keys = {"full_batch": False, "dataset_strategy": [[2, 1], [2, 1]], "search_mode": "sharding_propagation"}
    assert semi_auto_dataset_keys(keys) == {**keys, "dataset_strategy": ((2, 1), (2, 1))}
    with caplog.at_level(logging.INFO, logger="mindformers"):
        assert semi_auto_dataset_keys({**keys, "full_batch": True}) == {"full_batch": True,
                                                                         "search_mode": "sharding_propagation"}
    assert "parallel.dataset_strategy [[2, 1], [2, 1]] is replaced by 'full_batch'" in caplog.text
    assert semi_auto_dataset_keys({"dataset_strategy": "full_batch"}) == {"dataset_strategy": "full_batch"}
