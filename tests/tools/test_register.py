"""The component registry."""
import pytest

from mindformers.tools.register import MindFormerModuleType, MindFormerRegister, build_from_config, register_path


@MindFormerRegister.register(MindFormerModuleType.METRIC, alias="toy_metric")
class ToyMetric:
    """A metric used only by these tests."""

    def __init__(self, scale: float = 1.0, name: str = "toy"):
        self.scale, self.name = scale, name


def test_register_with_alias_and_build():
    assert MindFormerRegister.get_cls(MindFormerModuleType.METRIC, "ToyMetric") is ToyMetric
    assert MindFormerRegister.get_cls("metric", "toy_metric") is ToyMetric
    obj = build_from_config({"type": "toy_metric", "scale": 2.0}, MindFormerModuleType.METRIC, name="default")
    assert obj.scale == 2.0 and obj.name == "default"
    # a framework default the constructor does not take is not passed
    assert build_from_config({"type": "ToyMetric"}, MindFormerModuleType.METRIC, unrelated=1).scale == 1.0


def test_upstream_get_instance_from_cfg_builds_the_same():
    obj = MindFormerRegister.get_instance_from_cfg({"type": "toy_metric", "scale": 3.0}, MindFormerModuleType.METRIC,
                                                   default_args={"name": "from_default"})
    assert isinstance(obj, ToyMetric) and (obj.scale, obj.name) == (3.0, "from_default")


def test_unknown_type_lists_close_names():
    with pytest.raises(KeyError, match="did you mean 'ToyMetric'"):
        MindFormerRegister.get_cls(MindFormerModuleType.METRIC, "ToyMetrik")


def test_unknown_argument_is_an_error():
    with pytest.raises(TypeError, match="unknown argument 'scal': did you mean 'scale'"):
        build_from_config({"type": "ToyMetric", "scal": 3}, MindFormerModuleType.METRIC)


def test_name_clash_is_an_error():
    with pytest.raises(ValueError, match="already registered"):
        @MindFormerRegister.register(MindFormerModuleType.METRIC, alias="toy_metric")
        class Other:  # noqa: F811
            pass


def test_register_path_imports_user_modules(tmp_path):
    (tmp_path / "my_callbacks.py").write_text(
        "from mindformers.tools.register import MindFormerRegister, MindFormerModuleType\n"
        "@MindFormerRegister.register(MindFormerModuleType.CALLBACK)\n"
        "class UserCallback:\n    def __init__(self, every=1):\n        self.every = every\n")
    register_path(str(tmp_path))
    assert build_from_config({"type": "UserCallback", "every": 3}, MindFormerModuleType.CALLBACK).every == 3
    with pytest.raises(FileNotFoundError, match="--register_path"):
        register_path(str(tmp_path / "missing"))


def test_builtin_components_are_registered():
    import mindformers  # noqa: F401
    for kind, name in [(MindFormerModuleType.MODELS, "LlamaForCausalLM"), (MindFormerModuleType.CONFIG, "LlamaConfig"),
                       (MindFormerModuleType.TOKENIZER, "LlamaTokenizer"),
                       (MindFormerModuleType.DATASET, "CausalLanguageModelDataset"),
                       (MindFormerModuleType.OPTIMIZER, "AdamW"), (MindFormerModuleType.LR, "CosineWithWarmUpLR"),
                       (MindFormerModuleType.WRAPPER, "MFTrainOneStepCell"),
                       (MindFormerModuleType.CALLBACK, "MFLossMonitor"),
                       (MindFormerModuleType.CALLBACK, "CheckpointMonitor"),
                       (MindFormerModuleType.TRAINER, "CausalLanguageModelingTrainer")]:
        assert MindFormerRegister.is_exist(kind, name), (kind, name)
