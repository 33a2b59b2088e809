"""context.enable_compile_cache: MindSpore's compile cache in a directory keyed by the config and the code, so a
run with another config compiles afresh instead of silently loading the old graph."""
import json
import os
import subprocess
import sys

import pytest

from mindformers.config import MindFormerConfig
from mindformers.core import context as ctx_module
from mindformers.core.context import build_context, compile_cache_dir

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def config(**overrides):
    base = dict(output_dir="./out_a", seed=1, context={"device_target": "CPU", "mode": 0},
                model={"model_config": {"type": "LlamaConfig", "num_layers": 2, "hidden_size": 64}},
                runner_config={"batch_size": 2}, callbacks=[{"type": "MFLossMonitor"}])
    for key, value in overrides.items():
        node = base
        *parents, leaf = key.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return MindFormerConfig(**base)


def test_directory_ignores_run_bookkeeping_and_follows_the_graph():
    same = compile_cache_dir(config(), "/c")
    assert os.path.dirname(same) == "/c"
    # where outputs go, the seed and the callbacks do not change the compiled graphs
    assert compile_cache_dir(config(output_dir="./out_b", seed=2, callbacks=[]), "/c") == same
    # the model shape and the batch do
    assert compile_cache_dir(config(model__model_config__num_layers=1), "/c") != same
    assert compile_cache_dir(config(runner_config__batch_size=4), "/c") != same


def test_build_context_sets_and_clears_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("MS_COMPILER_CACHE_ENABLE", raising=False)
    monkeypatch.delenv("MS_COMPILER_CACHE_PATH", raising=False)
    monkeypatch.setattr(ctx_module, "_CACHE_ENV_SET", set())
    cfg = config(context__enable_compile_cache=True, context__compile_cache_path=str(tmp_path))
    build_context(cfg)
    assert os.environ["MS_COMPILER_CACHE_ENABLE"] == "1"
    assert os.environ["MS_COMPILER_CACHE_PATH"] == compile_cache_dir(cfg, str(tmp_path))
    build_context(config())  # a later config in the same process without the cache
    assert "MS_COMPILER_CACHE_ENABLE" not in os.environ and "MS_COMPILER_CACHE_PATH" not in os.environ


def test_default_directory_is_under_output_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(ctx_module, "_CACHE_ENV_SET", set())
    monkeypatch.delenv("MS_COMPILER_CACHE_PATH", raising=False)
    cfg = config(output_dir=str(tmp_path), context__enable_compile_cache=True)
    build_context(cfg)
    assert os.environ["MS_COMPILER_CACHE_PATH"].startswith(os.path.join(str(tmp_path), "compile_cache") + os.sep)
    build_context(config())


@pytest.mark.slow
def test_second_run_loads_the_cache_and_another_config_does_not(tmp_path):
    runs = iter(range(3))

    def train(num_layers):
        out_dir = str(tmp_path / f"out{next(runs)}")
        out = subprocess.run([sys.executable, "run_mindformer.py", "--config", "configs/llama/pretrain_llama_tiny.yaml",
                              "--run_mode", "train", "--output_dir", out_dir,
                              "--runner_config.stop_step", "2", "--model.model_config.num_layers", str(num_layers),
                              "--context.enable_compile_cache", "true",
                              "--context.compile_cache_path", str(tmp_path / "cache")],
                             cwd=ROOT, capture_output=True, text=True, timeout=600,
                             env=dict(os.environ, GLOG_v="2"))  # "Use the compilation cache" is a warning
        assert out.returncode == 0, out.stderr[-3000:]
        log = os.path.join(out_dir, "log", "train_metrics.jsonl")
        return out.stderr, [json.loads(line)["loss"] for line in open(log)]

    stderr, losses = train(1)
    assert "Use the compilation cache" not in stderr
    stderr, again = train(1)
    assert "Use the compilation cache" in stderr and again == losses  # same graph, same numbers
    stderr, other = train(2)
    assert "Use the compilation cache" not in stderr and other != losses
    assert len(os.listdir(tmp_path / "cache")) == 2


def test_directory_follows_register_path_components(tmp_path, monkeypatch):
    import types
    user = tmp_path / "my_model.py"
    user.write_text("X = 1\n")
    module = types.ModuleType("mf_user_my_model")
    module.__file__ = str(user)
    monkeypatch.setitem(sys.modules, "mf_user_my_model", module)
    before = compile_cache_dir(config(), "/c")
    user.write_text("X = 2\n")
    assert compile_cache_dir(config(), "/c") != before
