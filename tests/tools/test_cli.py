"""run_mindformer.py's command line."""
import pytest

from mindformers.config import ConfigError
from mindformers.tools.cli import parse_args, split_overrides


def test_upstream_flags_map_to_config_keys():
    args, overrides = parse_args([
        "--config", "x.yaml", "--run_mode", "finetune", "--use_parallel", "False", "--load_checkpoint", "ck",
        "--resume_training", "True", "--output_dir", "out", "--device_target", "CPU", "--device_id", "1",
        "--train_dataset_dir", "data.txt", "--eval_dataset_dir", "ev.txt", "--seed", "3",
        "--predict_batch_size", "2", "--register_path", "research/x"])
    got = dict(overrides)
    assert got == {"run_mode": "finetune", "use_parallel": False, "load_checkpoint": "ck",
                   "resume_training": True, "output_dir": "out", "context.device_target": "CPU",
                   "context.device_id": 1, "train_dataset.data_loader.dataset_dir": "data.txt",
                   "eval_dataset.data_loader.dataset_dir": "ev.txt", "seed": 3, "predict_batch_size": 2}
    assert args.register_path == ["research/x"] and args.config == "x.yaml"


def test_resume_training_may_name_a_checkpoint():
    _, overrides = parse_args(["--config", "x.yaml", "--resume_training", "llama-step10"])
    assert dict(overrides)["resume_training"] == "llama-step10"


def test_dotted_overrides_and_options_are_typed():
    args, overrides = parse_args(["--config", "x.yaml", "--runner_config.epochs", "2", "--optimizer.eps=1e-6",
                                  "--options", "a.b=[1,2]", "c.d=true", "--model.model_config.x", "text"])
    got = dict(overrides)
    assert got["runner_config.epochs"] == 2 and got["optimizer.eps"] == 1e-6
    assert got["a.b"] == [1, 2] and got["c.d"] is True and got["model.model_config.x"] == "text"


def test_predict_data_takes_several_prompts():
    args, _ = parse_args(["--config", "x.yaml", "--predict_data", "hello world", "second"])
    assert args.predict_data == ["hello world", "second"]


def test_bad_values_are_errors(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--config", "x.yaml", "--use_parallel", "maybe"])
    assert "expected True or False" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--config", "x.yaml", "--run_mode", "serve"])
    with pytest.raises(ConfigError, match="needs a value"):
        split_overrides(["--a.b"])
    with pytest.raises(ConfigError, match="key.path=value"):
        parse_args(["--config", "x.yaml", "--options", "novalue"])
