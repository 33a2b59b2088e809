"""Every YAML under configs/ loads and passes the schema check."""
import glob
import os

import pytest

from mindformers.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True))


def test_configs_exist():
    assert CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))
def test_config_validates(path):
    cfg = load_config(path)
    assert cfg.run_mode in ("train", "finetune", "eval", "predict")
    assert cfg.model.model_config.type and cfg.model.arch.type
