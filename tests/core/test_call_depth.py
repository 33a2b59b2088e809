"""Deep models compile without context.max_call_depth: build_model sets MindSpore's recursion limit from the layer
count (core/context.py), never below the config's own value. The 128-layer measurement is in docs/performance.md."""
import mindspore as ms
import pytest

from mindformers import Trainer
from mindformers.config import load_config
from mindformers.core import context
from mindformers.trainer import builders

CONFIG = "configs/qwen3/pretrain_qwen3_tiny.yaml"  # sets no max_call_depth
TINY = {"model.model_config.num_layers": 4, "model.model_config.hidden_size": 16,
        "model.model_config.intermediate_size": 32, "model.model_config.num_heads": 1,
        "model.model_config.n_kv_heads": 1, "model.model_config.head_dim": 16, "model.model_config.seq_length": 32,
        "runner_config.stop_step": 1, "runner_config.batch_size": 1, "callbacks": [{"type": "MFLossMonitor"}]}


@pytest.fixture(autouse=True)
def default_limit():
    yield
    context._ASKED_CALL_DEPTH["value"] = None
    ms.set_recursion_limit(context.DEFAULT_CALL_DEPTH)


def test_the_limit_follows_the_depth_and_keeps_a_larger_config_value():
    assert context.call_depth_for(128) == 1000 + 64 * 128
    context.build_context(load_config(CONFIG, {"context.max_call_depth": 20000}))
    assert context.ensure_call_depth(128) == 20000
    context.build_context(load_config(CONFIG, {"context.max_call_depth": 50}))
    assert context.ensure_call_depth(2) == 1128


def test_a_train_step_compiles_under_the_limit_its_depth_gives(tmp_path, monkeypatch):
    # Scaled down to run in seconds: without the 1000 base, 4 layers get 100 + 4 x 64 = 356 (they need about 250,
    # measured); the config's own limit of 150 stops the same step, so the depth really needs the raise.
    monkeypatch.setattr(context, "DEFAULT_CALL_DEPTH", 100)
    config = load_config(CONFIG, {**TINY, "context.max_call_depth": 150, "output_dir": str(tmp_path / "a")})
    with monkeypatch.context() as patch:
        patch.setattr(builders, "ensure_call_depth", lambda layers: None)  # the code before: the config's limit
        with pytest.raises(RuntimeError, match="Exceed function call depth limit 150"):
            Trainer(args=config).train()
    config = load_config(CONFIG, {**TINY, "context.max_call_depth": 150, "output_dir": str(tmp_path / "b")})
    history = Trainer(args=config).train()
    assert len(history) == 1
