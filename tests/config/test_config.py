"""Config layering, references, overrides and schema errors."""
import copy
import textwrap

import pytest

from mindformers.config import ConfigError, MindFormerConfig, load_config, parse_value


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return str(path)


@pytest.fixture
def layered(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "grand.yaml", """
        seed: 1
        runner_config: {epochs: 1, batch_size: 2, sink_mode: false}
        context: {mode: 0, device_target: CPU}
        parallel_config: {data_parallel: 1, model_parallel: 1}
        """)
    write(tmp_path / "base_a.yaml", """
        base_config: sub/grand.yaml
        runner_config: {batch_size: 4}
        callbacks: [{type: MFLossMonitor}, {type: CheckpointMonitor, prefix: a}]
        """)
    write(tmp_path / "base_b.yaml", """
        runner_config: {epochs: 3}
        output_dir: ./from_b
        """)
    return write(tmp_path / "child.yaml", """
        base_config: [base_a.yaml, base_b.yaml]
        output_dir: ./out_${seed}_${runner_config.batch_size}
        callbacks: [{type: MFLossMonitor, per_print_times: 5}]
        """)


def test_layers_merge_in_order_child_last(layered):
    cfg = load_config(layered)
    assert cfg.seed == 1
    assert cfg.runner_config.to_dict() == {"epochs": 3, "batch_size": 4, "sink_mode": False}
    assert cfg.context.device_target == "CPU"
    # lists are replaced, not merged
    assert cfg.callbacks == [{"type": "MFLossMonitor", "per_print_times": 5}]
    assert cfg.output_dir == "./out_1_4"
    assert "base_config" not in cfg


def test_overrides_apply_before_references_and_are_typed(layered):
    cfg = load_config(layered, ["seed=7", "runner_config.batch_size=16", "runner_config.sink_mode=True",
                                "parallel_config.data_parallel=2", "use_parallel=True"])
    assert cfg.seed == 7 and cfg.runner_config.batch_size == 16
    assert cfg.runner_config.sink_mode is True
    assert cfg.output_dir == "./out_7_16"
    assert cfg.where("seed") == "command line"
    assert cfg.where("runner_config", "epochs").endswith("base_b.yaml:2")


@pytest.mark.parametrize("text,value", [
    ("true", True), ("True", True), ("false", False), ("1", 1), ("1.0", 1.0), ("1e-5", 1e-5),
    ("1.e-8", 1e-8), ("-3E+2", -300.0), ("[1, 2]", [1, 2]), ("{a: 1}", {"a": 1}), ("null", None),
    ("abc", "abc"), ("./path/x.yaml", "./path/x.yaml"), ("1e", "1e"), ("0.1.2", "0.1.2")])
def test_parse_value_types_like_yaml(text, value):
    assert parse_value(text) == value and type(parse_value(text)) is type(value)


def test_yaml_file_reads_1e_minus_5_as_float(tmp_path):
    cfg = load_config(write(tmp_path / "c.yaml", "optimizer: {type: AdamW, eps: 1e-5}\n"), validate=False)
    assert cfg.optimizer.eps == 1e-5


def test_list_items_are_addressable(layered):
    cfg = load_config(layered, ["callbacks.0.per_print_times=2"])
    assert cfg.callbacks[0].per_print_times == 2
    with pytest.raises(ConfigError, match="list of 1 items"):
        load_config(layered, ["callbacks.3.per_print_times=2"])


def test_typo_names_path_file_line_and_closest_key(tmp_path):
    path = write(tmp_path / "c.yaml", """
        seed: 0
        runner_config:
          epochs: 1
          bacth_size: 2
        """)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert "c.yaml:5" in msg and "runner_config.bacth_size" in msg and "did you mean 'batch_size'" in msg


def test_unknown_top_level_key_and_override_typo(tmp_path):
    path = write(tmp_path / "c.yaml", "seed: 0\nrun_mod: train\n")
    with pytest.raises(ConfigError, match=r"c.yaml:2: unknown key 'run_mod'; did you mean 'run_mode'"):
        load_config(path)
    ok = write(tmp_path / "ok.yaml", "seed: 0\n")
    with pytest.raises(ConfigError, match=r"command line: unknown key 'context.devce_id'.*'device_id'"):
        load_config(ok, ["context.devce_id=1"])


def test_typed_section_keys_checked_against_component(tmp_path):
    path = write(tmp_path / "c.yaml", """
        callbacks:
          - type: CheckpointMonitor
            save_checkpoint_step: 10
        """)
    with pytest.raises(ConfigError, match="did you mean 'save_checkpoint_steps'"):
        load_config(path)
    bad_type = write(tmp_path / "t.yaml", "callbacks: [{type: MFLossMonitr}]\n")
    with pytest.raises(ConfigError, match="did you mean 'MFLossMonitor'"):
        load_config(bad_type)


def test_base_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="base_config 'nope.yaml' not found"):
        load_config(write(tmp_path / "a.yaml", "base_config: nope.yaml\n"))
    write(tmp_path / "x.yaml", "base_config: y.yaml\n")
    write(tmp_path / "y.yaml", "base_config: x.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(str(tmp_path / "x.yaml"))


def test_invalid_yaml_names_line(tmp_path):
    with pytest.raises(ConfigError, match=r"bad.yaml:4: invalid YAML"):
        load_config(write(tmp_path / "bad.yaml", "seed: 0\nrunner_config:\n  epochs: [1, 2\n  x: 1\n"))


def test_unresolvable_reference(tmp_path):
    with pytest.raises(ConfigError, match="cannot resolve reference") as err:
        load_config(write(tmp_path / "r.yaml", "output_dir: ${nothing.here}\n"))
    message = str(err.value)
    assert "\n" not in message and "r.yaml:1" in message and "'nothing.here' not found" in message


def test_attribute_access_and_missing_is_none():
    cfg = MindFormerConfig({"a": {"b": [{"c": 1}]}}, d=2)
    assert cfg.a.b[0].c == 1 and cfg.d == 2 and cfg.missing is None
    cfg.e = {"f": 3}
    assert cfg.e.f == 3
    clone = copy.deepcopy(cfg)
    clone.a.b[0].c = 5
    assert cfg.a.b[0].c == 1
    cfg.merge_from_dict({"a.b.0.c": 9, "new.key": "v"})
    assert cfg.a.b[0].c == 9 and cfg.new.key == "v"
    assert cfg.hash() == MindFormerConfig(cfg.to_dict()).hash()


def test_processor_type_and_tokenizer_keys_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'LlamaProcessor'"):
        load_config(write(tmp_path / "p.yaml", "processor: {type: LlamaProcesor}\n"))
    with pytest.raises(ConfigError, match="processor.tokenizer.vocab_fle'; did you mean 'vocab_file'"):
        load_config(write(tmp_path / "t.yaml", "processor:\n  tokenizer: {type: LlamaTokenizer, vocab_fle: x}\n"))


def test_a_component_of_another_type_keeps_only_the_keys_it_accepts(tmp_path):
    write(tmp_path / "base.yaml", """
        optimizer: {type: AdamW, betas: [0.9, 0.95], weight_decay: 0.1}
        lr_schedule: {type: CosineWithWarmUpLR, learning_rate: 1.e-3, warmup_steps: 5}
        """)
    child = write(tmp_path / "child.yaml", """
        base_config: base.yaml
        optimizer: {type: SGD, momentum: 0.9}
        lr_schedule: {learning_rate: 2.e-3}
        """)
    cfg = load_config(child)
    # SGD takes weight_decay but not AdamW's betas; a subclass config keeps every key of its base
    assert cfg.optimizer.to_dict() == {"type": "SGD", "momentum": 0.9, "weight_decay": 0.1}
    assert cfg.lr_schedule.to_dict() == {"type": "CosineWithWarmUpLR", "learning_rate": 2e-3, "warmup_steps": 5}
    write(tmp_path / "model.yaml", """
        base_config: base.yaml
        model: {model_config: {type: LlamaConfig, seq_length: 64, hidden_size: 32}}
        """)
    sub = write(tmp_path / "sub.yaml", """
        base_config: model.yaml
        model: {model_config: {type: Qwen3Config, head_dim: 16}}
        """)
    assert load_config(sub).model.model_config.to_dict() == {"type": "Qwen3Config", "seq_length": 64,
                                                             "hidden_size": 32, "head_dim": 16}
