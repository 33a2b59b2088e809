"""Every YAML under configs/ loads and passes the schema check."""
import glob
import os

import pytest

from mindformers.config import load_config
from mindformers.trainer.preflight import model_section_errors

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True))
RESEARCH = sorted(glob.glob(os.path.join(ROOT, "research", "*", "*.yaml")))


def test_configs_exist():
    assert CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))
def test_config_validates(path):
    cfg = load_config(path)
    assert cfg.run_mode in ("train", "finetune", "eval", "predict")
    # the model is named by type (our form) or comes from a Hugging Face directory (upstream 2.x's form)
    model_dir = cfg.get("pretrained_model_dir")
    assert (cfg.model.model_config.type and cfg.model.arch.type) or model_dir
    if not model_dir or os.path.exists(os.path.join(ROOT, model_dir)):
        assert model_section_errors(cfg) == []


@pytest.mark.parametrize("path", RESEARCH, ids=lambda p: os.path.relpath(p, ROOT))
def test_research_config_validates_with_its_register_path(path):
    from mindformers.tools.register import register_path
    register_path(os.path.dirname(path))
    cfg = load_config(path)
    assert cfg.model.model_config.type and cfg.model.arch.type
