"""An override of train_dataset changes the data a run trains on, through every entry point (upstream's rule:
the task section is filled from train_dataset after every override); Trainer keyword arguments follow upstream."""
import textwrap

import pytest

from mindformers import Trainer
from mindformers.config import ConfigError, load_config
from mindformers.trainer.builders import build_dataset, build_tokenizer

BASE = "configs/llama/pretrain_llama_tiny.yaml"
ENV = {"rank_id": 0, "device_num": 1}


@pytest.fixture
def small_corpus(tmp_path):
    """A corpus far smaller than the shipped one: its batch count tells which data a dataset reads."""
    path = tmp_path / "small.txt"
    path.write_text("\n\n".join(f"Document {i} says hello to the world again and again." for i in range(40)))
    return str(path)


def _batches(config) -> int:
    tokenizer = build_tokenizer(config)
    dataset = build_dataset(config, "train", tokenizer, 32, 2, ENV)
    return dataset.get_dataset_size()


def test_child_yaml_override_of_train_dataset_reaches_the_task(tmp_path, small_corpus):
    child = tmp_path / "child.yaml"
    child.write_text(textwrap.dedent(f"""
        base_config: {__import__('os').path.abspath(BASE)}
        train_dataset:
          data_loader: {{dataset_dir: {small_corpus}}}
        """))
    config = load_config(str(child))
    assert config.train_dataset_task.dataset_config.data_loader.dataset_dir == small_corpus
    assert _batches(config) < _batches(load_config(BASE))


def test_cli_train_dataset_dir_reaches_the_task(small_corpus):
    from mindformers.tools.cli import parse_args
    _, overrides = parse_args(["--config", BASE, "--train_dataset_dir", small_corpus])
    config = load_config(BASE, overrides)
    assert config.train_dataset_task.dataset_config.data_loader.dataset_dir == small_corpus
    assert _batches(config) < _batches(load_config(BASE))


def test_override_of_the_task_copy_names_the_key_to_set():
    with pytest.raises(ConfigError, match="set 'train_dataset.batch_size' instead"):
        load_config(BASE, ["train_dataset_task.dataset_config.batch_size=2"])


def test_notebook_change_of_train_dataset_is_what_the_trainer_builds(small_corpus):
    config = load_config(BASE)
    config.train_dataset.data_loader.dataset_dir = small_corpus  # the task copy still names the old corpus
    assert _batches(config) < _batches(load_config(BASE))


class _Capture:
    """Stands in for the task trainer: records the config and dataset each Trainer method hands over."""

    def __init__(self):
        self.calls = []

    def train(self, config, **kwargs):
        self.calls.append((config, kwargs))
        return []

    evaluate = predict = train


def _trainer(**kwargs):
    trainer = Trainer(args=BASE, **kwargs)
    trainer.impl = _Capture()
    return trainer


def test_trainer_train_dataset_path_and_mapping_reach_the_task(small_corpus):
    trainer = _trainer(train_dataset=small_corpus)
    trainer.train()
    config, kwargs = trainer.impl.calls[-1]
    assert kwargs["dataset"] is None and _batches(config) < _batches(load_config(BASE))
    section = dict(load_config(BASE).train_dataset)
    section["data_loader"] = {"type": "TextDataLoader", "dataset_dir": small_corpus}
    trainer = _trainer(train_dataset=section)
    trainer.finetune(finetune_checkpoint=small_corpus)  # any existing path is accepted as the weights to load
    config, _ = trainer.impl.calls[-1]
    assert config.train_dataset_task.dataset_config.data_loader.dataset_dir == small_corpus
    assert config.load_checkpoint == small_corpus and config.run_mode == "finetune"


def test_trainer_keywords_follow_upstream(tmp_path):
    trainer = _trainer()
    trainer.train(resume_training=True, ignore_data_skip=True, data_skip_steps=3, do_eval=True)
    config, _ = trainer.impl.calls[-1]
    assert (config.resume_training, config.ignore_data_skip, config.data_skip_steps, config.do_eval) == \
        (True, True, 3, True)
    trainer.predict(input_data="hello", batch_size=2, max_new_tokens=5, do_sample=False)
    config, kwargs = trainer.impl.calls[-1]
    assert kwargs["inputs"] == "hello" and config.predict_batch_size == 2
    assert config.generation_config.max_new_tokens == 5


@pytest.mark.parametrize("call,message", [
    (lambda t: t.train(train_checkpoint="/no/such/ckpt"), "train_checkpoint '/no/such/ckpt': no such file"),
    (lambda t: t.finetune(resume_from_checkpoint="/no/such"), "resume_from_checkpoint '/no/such': no such file"),
    (lambda t: t.evaluate(eval_checkpoint="/no/such"), "eval_checkpoint '/no/such': no such file"),
    (lambda t: t.predict(predict_checkpoint="/no/such"), "predict_checkpoint '/no/such': no such file"),
    (lambda t: t.evaluate(eval_checkpoint=True), "there is none"),
])
def test_a_missing_checkpoint_is_an_error_not_random_weights(tmp_path, call, message):
    trainer = _trainer()
    trainer.config.output_dir = str(tmp_path)
    with pytest.raises(FileNotFoundError, match=message):
        call(trainer)
    assert trainer.impl.calls == []


@pytest.mark.parametrize("call,name", [
    (lambda t: t.train(epochs=2), "epochs"),
    (lambda t: t.evaluate(batch=2), "batch"),
    (lambda t: t.predict(temprature=0.5), "temprature"),
])
def test_an_unknown_keyword_is_an_error_naming_it(call, name):
    with pytest.raises(TypeError, match=name):
        call(_trainer())


def test_an_unknown_task_is_refused():
    with pytest.raises(ValueError, match="task 'image_classification'"):
        Trainer(args=BASE, task="image_classification")
