"""Issue 18: every input checked where it enters, every fault leaves the run directory whole.

run_mindformer.main runs in-process (stderr from capsys) and every case stops before any model compile: a bad
value is one `error: <file:line or key>: <what> (<what would be valid>)` line with exit status 2 and no traceback;
a full disk (OSError ENOSPC from a patched writer), a SIGKILL during a save and a second run on the same
output_dir leave `latest` loadable and no `.tmp` behind. Only the SIGKILL case needs a subprocess."""
import errno
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest
import safetensors.numpy

from mindformers.checkpoint import resolve_checkpoint
from mindformers.checkpoint.checkpoint import (prune_checkpoints, read_state, remove_stale_temporaries,
                                               write_checkpoint)
from mindformers.core.callback import CallbackParams
from mindformers.core.callback.callback import CheckpointMonitor, MFLossMonitor
from mindformers.trainer.causal_lm import CausalLanguageModelingTrainer
from mindformers.tools.rundir import OutputDirError, acquire, release

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
import run_mindformer  # noqa: E402

TINY = os.path.join(ROOT, "configs/llama/pretrain_llama_tiny.yaml")
ALPACA = os.path.join(ROOT, "configs/llama/finetune_llama_tiny_alpaca.yaml")
HF_PREDICT = os.path.join(ROOT, "configs/llama/predict_llama_tiny_hf.yaml")
HF_DIR = os.path.join(ROOT, "tests/fixtures/hf_tiny_llama")
WEIGHTS = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}


@pytest.fixture(autouse=True)
def _keep_process_state():
    """main() sets up the `mindformers` logger and a run may set MindSpore's mode: give both back."""
    import mindspore as ms
    logger = logging.getLogger("mindformers")
    handlers, propagate, level = list(logger.handlers), logger.propagate, logger.level
    mode = ms.get_context("mode")
    yield
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        if handler not in handlers:
            handler.close()
    for handler in handlers:
        logger.addHandler(handler)
    logger.propagate, logger.level = propagate, level
    ms.set_context(mode=mode)


def cli(capsys, *args):
    """(exit status, stderr) of run_mindformer.main(args)."""
    try:
        code = run_mindformer.main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def one_error(code, err, *named):
    """Exit 2, no traceback, and exactly one `error:` line naming everything in `named`; returns that line."""
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    for name in named:
        assert str(name) in lines[0], (name, lines[0])
    return lines[0]


def never_train(self, *args, **kwargs):
    raise AssertionError("the run started although its input was bad")


@pytest.fixture
def no_training(monkeypatch):
    monkeypatch.setattr(CausalLanguageModelingTrainer, "train", never_train)
    monkeypatch.setattr(CausalLanguageModelingTrainer, "evaluate", never_train)
    monkeypatch.setattr(CausalLanguageModelingTrainer, "predict", never_train)


def assert_latest_loads(ckpt_dir, step):
    """`latest` names the complete checkpoint of `step`, whose weights read back, and no temporary is left."""
    with open(os.path.join(ckpt_dir, "latest"), encoding="utf-8") as f:
        assert f.read().strip().endswith(f"-step{step}")
    weights = safetensors.numpy.load_file(resolve_checkpoint(str(ckpt_dir)))
    assert set(weights) == set(WEIGHTS)
    assert read_state(os.path.dirname(resolve_checkpoint(str(ckpt_dir))))["step"] == step
    assert not [n for n in os.listdir(ckpt_dir) if ".tmp" in n], os.listdir(ckpt_dir)


def full_disk_after(monkeypatch, calls: int):
    """safetensors' writer fails with ENOSPC (after writing part of the file) from call number `calls` + 1."""
    real, count = safetensors.numpy.save_file, [0]

    def save_file(tensors, path, metadata=None):
        count[0] += 1
        if count[0] > calls:
            with open(path, "wb") as f:
                f.write(b"\0" * 16)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return real(tensors, path, metadata=metadata)

    monkeypatch.setattr(safetensors.numpy, "save_file", save_file)


# ---------------------------------------------------------------- values of the wrong type
TYPE_CASES = [
    ("runner_config.batch_size", "two", "an int"),
    ("runner_config.epochs", "1.5", "an int"),
    ("runner_config.gradient_accumulation_steps", "[2]", "an int"),
    ("train_dataset.batch_size", "eight", "an int"),
    ("train_dataset.drop_remainder", "sometimes", "True or False"),
    ("optimizer.eps", "tiny", "a number"),
    ("optimizer.betas", "0.9", "a list of numbers"),
    ("optimizer.weight_decay", "high", "a number"),
    ("lr_schedule.learning_rate", "fast", "a number"),
    ("lr_schedule.warmup_steps", "x", "null or an int"),
    ("runner_wrapper.max_grad_norm", "one", "a number"),
    ("runner_wrapper.use_clip_grad", "3", "True or False"),
    ("model.model_config.hidden_size", "big", "an int"),
    ("model.model_config.use_flash_attention", "1", "True or False"),
    ("model.model_config.rms_norm_eps", "small", "a number"),
    ("parallel_config.model_parallel", "two", "an int"),
    ("parallel.gradients_mean", "maybe", "True or False"),
    ("context.mode", "graph", "an int"),
    ("callbacks.1.save_checkpoint_steps", "often", "an int"),
    ("seed", "lucky", "an int"),
    ("generation_config.temperature", "hot", "a number"),
    ("processor.tokenizer.add_bos_token", "7", "True or False"),
]


@pytest.mark.parametrize("key,value,valid", TYPE_CASES, ids=[c[0] for c in TYPE_CASES])
def test_a_value_of_the_wrong_type_is_refused_by_validate(capsys, key, value, valid):
    override = [f"--{key}", value] if "." in key else ["--options", f"{key}={value}"]
    line = one_error(*cli(capsys, "--config", TINY, "--validate", *override), "command line", key)
    assert f"({key.rsplit('.', 1)[-1]} takes {valid})" in line


def test_a_typed_flag_with_a_bad_value_is_one_line(capsys):
    one_error(*cli(capsys, "--config", TINY, "--validate", "--seed", "lucky"), "--seed", "'lucky'")


def test_a_wrong_type_in_the_yaml_names_its_file_and_line(capsys, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(f"base_config: {TINY}\nrunner_config:\n  batch_size: two\n", encoding="utf-8")
    one_error(*cli(capsys, "--config", config, "--validate"), f"{config}:3", "runner_config.batch_size", "'two'")


def test_a_wrong_type_stops_a_real_run_before_any_work(capsys, tmp_path, no_training):
    out = tmp_path / "out"
    one_error(*cli(capsys, "--config", TINY, "--output_dir", out, "--runner_config.batch_size", "two"),
              "runner_config.batch_size")
    assert not (out / "log" / "train_metrics.jsonl").exists() and not (out / "run.lock").exists()


# ---------------------------------------------------------------- what --validate can check without running
def test_a_missing_training_data_path_is_named(capsys):
    one_error(*cli(capsys, "--config", TINY, "--validate", "--train_dataset_dir", "/no/such/corpus.txt"),
              "train_dataset.data_loader.dataset_dir", "/no/such/corpus.txt")


def test_a_missing_eval_data_path_is_named_in_eval_mode(capsys):
    one_error(*cli(capsys, "--config", TINY, "--validate", "--run_mode", "eval", "--eval_dataset_dir",
                   "missing/eval.txt"), "eval_dataset.data_loader.dataset_dir")


def test_a_missing_data_files_of_an_instruction_set_is_named(capsys):
    one_error(*cli(capsys, "--config", ALPACA, "--validate", "--train_dataset.data_loader.data_files",
                   "missing/alpaca.json"), "train_dataset.data_loader.data_files", "missing/alpaca.json")


def test_use_parallel_without_msrun_is_one_line(capsys, monkeypatch):
    monkeypatch.delenv("MS_WORKER_NUM", raising=False)
    monkeypatch.delenv("RANK_TABLE_FILE", raising=False)
    one_error(*cli(capsys, "--config", TINY, "--validate", "--use_parallel", "True"), "use_parallel", "msrun")


def test_a_layout_that_does_not_match_the_workers_is_an_error(capsys, monkeypatch):
    monkeypatch.setenv("MS_WORKER_NUM", "4")
    line = one_error(*cli(capsys, "--config", TINY, "--validate", "--use_parallel", "True",
                          "--parallel_config.data_parallel", "2"), "parallel_config", "4 workers")
    assert "data_parallel 2 x model_parallel 1 x pipeline_stage 1 = 2" in line


def test_a_layout_that_matches_the_workers_validates(capsys, monkeypatch):
    monkeypatch.setenv("MS_WORKER_NUM", "2")
    code, err = cli(capsys, "--config", TINY, "--validate", "--use_parallel", "True",
                    "--parallel_config.data_parallel", "2")
    assert code == 0, err


def test_ascend_as_device_on_this_machine_is_one_line(capsys):
    one_error(*cli(capsys, "--config", TINY, "--validate", "--device_target", "Ascend"),
              "context.device_target", "Ascend")


def test_semi_auto_parallel_under_msrun_on_cpu_is_one_line(capsys, monkeypatch):
    monkeypatch.setenv("MS_WORKER_NUM", "2")
    one_error(*cli(capsys, "--config", TINY, "--validate", "--use_parallel", "True",
                   "--parallel.parallel_mode", "1"), "parallel.parallel_mode", "Ascend")


# ---------------------------------------------------------------- files that do not decode
def test_a_corpus_that_is_not_utf8_names_file_and_line(capsys, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(b"first line\nsecond line\ncaf\xe9 third\n")
    line = one_error(*cli(capsys, "--config", TINY, "--output_dir", tmp_path / "out", "--train_dataset_dir",
                          corpus), f"{corpus}:3", "not UTF-8")
    assert "column 4" in line and "save the file as UTF-8" in line


def test_an_instruction_file_that_is_not_utf8_names_file_and_line(tmp_path):
    from mindformers.dataset.rows import read_rows
    data = tmp_path / "alpaca.jsonl"
    data.write_bytes(b'{"instruction": "a", "output": "b"}\n{"instruction": "\xff", "output": "c"}\n')
    with pytest.raises(ValueError, match=rf"{data}:2: not UTF-8 text"):
        read_rows(str(data))


def test_a_json_lines_file_for_hf_datasets_that_is_not_utf8_names_file_and_line(tmp_path):
    from mindformers.dataset.hf_dataloader import load_local
    data = tmp_path / "data.jsonl"
    data.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=rf"{data}:2: not UTF-8 text \(byte 0xe9 at column 14"):
        load_local("json", str(data), "train", None, None, str(tmp_path / "cache"))


def test_a_prompt_file_that_is_not_utf8_names_file_and_line(capsys, tmp_path, no_training):
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(b"Return the\n\xff\xfe\n")
    one_error(*cli(capsys, "--config", os.path.join(ROOT, "configs/llama/predict_llama_tiny.yaml"), "--output_dir",
                   tmp_path / "out", "--predict_data", prompts), f"{prompts}:2", "not UTF-8")


@pytest.fixture
def hf_copy(tmp_path):
    target = tmp_path / "hf"
    shutil.copytree(HF_DIR, target)
    return target


@pytest.mark.parametrize("name", ["config.json", "tokenizer_config.json", "generation_config.json"])
@pytest.mark.parametrize("content", [b'{"model_type": "llama",\n  "hidden_size": }\n', b'{"a": "\xff"}'],
                         ids=["bad-json", "not-utf8"])
def test_a_broken_json_file_of_a_model_directory_is_named(capsys, hf_copy, name, content):
    (hf_copy / name).write_bytes(content)
    line = one_error(*cli(capsys, "--config", HF_PREDICT, "--validate", "--pretrained_model_dir", hf_copy),
                     f"{hf_copy / name}:")
    assert ("not valid JSON" in line) if content.startswith(b'{"model') else ("not UTF-8" in line)


def test_tokenizer_config_readers_name_the_file(hf_copy):
    from mindformers.tokenization.auto import read_tokenizer_config
    from mindformers.tokenization.chat_template import load_chat_template
    (hf_copy / "tokenizer_config.json").write_text('{"chat_template": }', encoding="utf-8")
    for read in (read_tokenizer_config, load_chat_template):
        with pytest.raises(ValueError, match=r"tokenizer_config.json: not valid JSON at line 1"):
            read(str(hf_copy))


def test_an_hf_config_json_that_is_not_an_object_is_named(hf_copy):
    from mindformers.models.hf.pretrained import read_hf_config
    (hf_copy / "config.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ValueError, match=r"config.json: expected a JSON object"):
        read_hf_config(str(hf_copy))


# ---------------------------------------------------------------- the output directory before the run
def test_an_output_dir_that_is_a_file_is_refused(capsys, tmp_path, no_training):
    path = tmp_path / "taken"
    path.write_text("not a directory")
    one_error(*cli(capsys, "--config", TINY, "--output_dir", path), "output_dir", str(path), "a file")


def test_an_output_dir_below_a_file_is_refused(capsys, tmp_path, no_training):
    path = tmp_path / "file"
    path.write_text("x")
    one_error(*cli(capsys, "--config", TINY, "--output_dir", path / "run"), str(path / "run"), "is a file")


def test_an_output_dir_that_is_not_writable_is_refused(capsys, tmp_path, monkeypatch, no_training):
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # the tests may run as root
    one_error(*cli(capsys, "--config", TINY, "--output_dir", tmp_path / "ro"), str(tmp_path / "ro"),
              "not writable")


def test_an_output_dir_on_a_full_disk_is_refused_before_any_work(capsys, tmp_path, monkeypatch, no_training):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(100, 100, 0))
    out = tmp_path / "full"
    one_error(*cli(capsys, "--config", TINY, "--output_dir", out), str(out), "MiB free")
    assert not (out / "log").exists()


def test_a_disk_without_room_for_one_checkpoint_stops_before_the_compile(capsys, tmp_path, monkeypatch):
    free = 4 << 20  # enough for logs, not for the tiny model's ~50 MB checkpoint
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(free, 0, free))
    one_error(*cli(capsys, "--config", TINY, "--output_dir", tmp_path / "small"), str(tmp_path / "small"),
              "4.0 MiB free")
    assert not (tmp_path / "small" / "log" / "train_metrics.jsonl").exists()


# ---------------------------------------------------------------- a disk that fills up while saving
def test_a_full_disk_at_save_time_keeps_latest_and_is_one_line(capsys, tmp_path, monkeypatch):
    out = tmp_path / "out"

    def train(self, config, **kwargs):
        directory = os.path.join(config.output_dir, "checkpoint")
        write_checkpoint(directory, "tiny", 1, WEIGHTS, WEIGHTS, {})
        full_disk_after(monkeypatch, 0)
        write_checkpoint(directory, "tiny", 2, WEIGHTS, WEIGHTS, {})

    monkeypatch.setattr(CausalLanguageModelingTrainer, "train", train)
    line = one_error(*cli(capsys, "--config", TINY, "--output_dir", out), "tiny-step2", "No space left",
                     "tiny-step1")
    assert "free space" in line
    assert_latest_loads(out / "checkpoint", 1)
    assert not (out / "run.lock").exists()


@pytest.mark.parametrize("fail_after", [0, 1], ids=["weights", "optimizer"])
def test_a_save_that_fails_part_way_leaves_no_temporary(tmp_path, monkeypatch, fail_after):
    write_checkpoint(str(tmp_path), "tiny", 1, WEIGHTS, WEIGHTS)
    full_disk_after(monkeypatch, fail_after)
    with pytest.raises(OutputDirError, match="tiny-step2: cannot write the checkpoint"):
        write_checkpoint(str(tmp_path), "tiny", 2, WEIGHTS, WEIGHTS)
    assert_latest_loads(tmp_path, 1)


def test_a_full_disk_when_updating_latest_keeps_the_previous_latest(tmp_path, monkeypatch):
    write_checkpoint(str(tmp_path), "tiny", 1, WEIGHTS)
    real_replace = os.replace

    def replace(src, dst):
        if os.path.basename(dst) == "latest":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), dst)
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OutputDirError, match="No space left"):
        write_checkpoint(str(tmp_path), "tiny", 2, WEIGHTS)
    monkeypatch.undo()
    assert_latest_loads(tmp_path, 1)


@pytest.mark.parametrize("failing", ["checkpoint", "latest"])
def test_a_failed_resave_of_the_same_step_keeps_a_complete_copy(tmp_path, monkeypatch, failing):
    write_checkpoint(str(tmp_path), "tiny", 3, WEIGHTS)
    real_replace = os.replace

    def replace(src, dst):
        target = "latest" if os.path.basename(dst) == "latest" else "checkpoint" if \
            os.path.basename(dst) == "tiny-step3" and not str(src).endswith("-old") else None
        if target == failing:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), dst)
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OutputDirError):
        write_checkpoint(str(tmp_path), "tiny", 3, WEIGHTS)
    monkeypatch.undo()
    assert_latest_loads(tmp_path, 3)


def _tiny_run_context(tmp_path, step):
    from mindspore import nn
    from mindspore.train import RunContext
    network = nn.Dense(3, 2)
    cb = CallbackParams(cur_step_num=step, cur_epoch_num=1, net_outputs=(2.5, False, 1.0, 0.5), network=network,
                        train_network=None, optimizer=None, output_dir=str(tmp_path), rank_id=0)
    return RunContext(cb)


def test_an_async_save_that_fails_is_raised_on_the_training_thread(tmp_path, monkeypatch):
    monitor = CheckpointMonitor(prefix="tiny", save_checkpoint_steps=1, async_save=True, save_optimizer=False)
    monitor.on_train_step_end(_tiny_run_context(tmp_path, 1))
    monitor.wait()
    full_disk_after(monkeypatch, 0)
    monitor.on_train_step_end(_tiny_run_context(tmp_path, 2))
    with pytest.raises(OutputDirError, match="tiny-step2.*No space left"):
        monitor.wait()
    ckpt = tmp_path / "checkpoint"
    assert (ckpt / "latest").read_text().strip() == "tiny-step1"
    assert set(safetensors.numpy.load_file(resolve_checkpoint(str(ckpt)))) == {"weight", "bias"}
    assert not [n for n in os.listdir(ckpt) if ".tmp" in n]


def test_pruning_never_removes_the_checkpoint_latest_names(tmp_path):
    for step in (1, 2, 3):
        write_checkpoint(str(tmp_path), "tiny", step, WEIGHTS)
    (tmp_path / "latest").write_text("tiny-step1\n")  # the newest save's `latest` update failed
    prune_checkpoints(str(tmp_path), "tiny", 1)
    assert sorted(os.listdir(tmp_path)) == ["latest", "tiny-step1", "tiny-step3"]
    assert_latest_loads(tmp_path, 1)


def test_a_metrics_file_on_a_full_disk_is_one_line_naming_it(tmp_path, monkeypatch):
    monitor = MFLossMonitor(metrics_file=str(tmp_path / "train_metrics.jsonl"))
    monkeypatch.setattr(os, "write", lambda fd, data: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space")))
    with pytest.raises(OutputDirError, match=r"train_metrics.jsonl: cannot write the training metrics"):
        monitor._append('{"step": 1}\n')


def test_metrics_records_are_whole_lines_under_concurrent_writers(tmp_path):
    monitors = [MFLossMonitor(metrics_file=str(tmp_path / "m.jsonl")) for _ in range(4)]
    payload = "x" * 500
    threads = [threading.Thread(target=lambda m=m, i=i: [m._append(json.dumps({"w": i, "n": n, "p": payload}) + "\n")
                                                           for n in range(100)]) for i, m in enumerate(monitors)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert len(records) == 400 and all(r["p"] == payload for r in records)


# ---------------------------------------------------------------- a run killed during a save, concurrent runs
KILLED_DURING_SAVE = r"""
import os, sys, time
import numpy as np
import safetensors.numpy as st
from mindformers.checkpoint.checkpoint import write_checkpoint
from mindformers.tools.rundir import acquire
out = sys.argv[1]
acquire(out)
directory = os.path.join(out, "checkpoint")
write_checkpoint(directory, "tiny", 1, {"w": np.arange(6, dtype=np.float32).reshape(2, 3)})
real = st.save_file
def hang(*args, **kwargs):
    real(*args, **kwargs)
    print("saving", flush=True)
    time.sleep(120)
st.save_file = hang
write_checkpoint(directory, "tiny", 2, {"w": np.zeros((2, 3), dtype=np.float32)})
"""


def test_a_run_after_a_sigkill_during_save_cleans_up_and_takes_over_the_lock(capsys, tmp_path, monkeypatch):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_DURING_SAVE, str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=dict(os.environ, GLOG_v="3"))
    try:
        assert proc.stdout.readline().strip() == "saving"
    finally:
        proc.kill()
        proc.wait()
    ckpt = out / "checkpoint"
    assert [n for n in os.listdir(ckpt) if ".tmp-" in n] and (out / "run.lock").exists()
    monkeypatch.setattr(CausalLanguageModelingTrainer, "train", lambda self, config, **kwargs: [])
    code, err = cli(capsys, "--config", TINY, "--output_dir", out)
    assert code == 0 and "Traceback" not in err, err
    assert f"taking over the lock of pid {proc.pid}" in err
    assert_latest_loads(ckpt, 1)
    assert not (out / "run.lock").exists()


def _lock(out, pid, host=None):
    os.makedirs(out, exist_ok=True)
    (out / "run.lock").write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(),
                                              "started": "2026-12-01 12:00:00"}))


def test_a_second_run_on_the_same_output_dir_is_refused_naming_the_first(capsys, tmp_path, no_training):
    out = tmp_path / "out"
    first = subprocess.Popen(["sleep", "60"])
    try:
        _lock(out, first.pid)
        (out / "log").mkdir()
        (out / "log" / "train_metrics.jsonl").write_text('{"step": 1}\n')
        (out / "log" / "rank_0.log").write_text("first run\n")
        one_error(*cli(capsys, "--config", TINY, "--output_dir", out), f"pid {first.pid}",
                  socket.gethostname(), str(out / "run.lock"))
        assert json.loads((out / "run.lock").read_text())["pid"] == first.pid
        assert (out / "log" / "train_metrics.jsonl").read_text() == '{"step": 1}\n'
        assert (out / "log" / "rank_0.log").read_text() == "first run\n"
    finally:
        first.kill()
        first.wait()


def test_a_lock_from_another_host_is_refused_naming_the_host(capsys, tmp_path, no_training):
    _lock(tmp_path, 4242, host="other-node-7")
    one_error(*cli(capsys, "--config", TINY, "--output_dir", tmp_path), "other-node-7", "run.lock")


def test_a_stale_lock_from_a_dead_process_is_taken_over_with_a_notice(capsys, tmp_path, monkeypatch):
    dead = subprocess.Popen(["true"])
    dead.wait()
    _lock(tmp_path, dead.pid)
    monkeypatch.setattr(CausalLanguageModelingTrainer, "train", lambda self, config, **kwargs: [])
    code, err = cli(capsys, "--config", TINY, "--output_dir", tmp_path)
    assert code == 0 and f"taking over the lock of pid {dead.pid}" in err, err
    assert not (tmp_path / "run.lock").exists()


def test_the_lock_is_given_back_when_a_run_fails(capsys, tmp_path, monkeypatch):
    def train(self, config, **kwargs):
        assert json.loads((tmp_path / "run.lock").read_text())["pid"] == os.getpid()
        raise ValueError("train_dataset: something the user can fix")

    monkeypatch.setattr(CausalLanguageModelingTrainer, "train", train)
    one_error(*cli(capsys, "--config", TINY, "--output_dir", tmp_path), "something the user can fix")
    assert not (tmp_path / "run.lock").exists()


def test_temporaries_of_a_live_writer_are_left_alone(tmp_path):
    live = subprocess.Popen(["sleep", "60"])
    try:
        for name in (f".tiny-step2.tmp-{live.pid}", ".tiny-step3.tmp-999999999"):
            (tmp_path / name).mkdir()
        (tmp_path / "latest.tmp-999999999").write_text("tiny-step3\n")
        assert sorted(remove_stale_temporaries(str(tmp_path))) == [".tiny-step3.tmp-999999999",
                                                                    "latest.tmp-999999999"]
        assert os.listdir(tmp_path) == [f".tiny-step2.tmp-{live.pid}"]
    finally:
        live.kill()
        live.wait()


def test_the_lock_is_reentrant_within_one_process(tmp_path):
    first = acquire(str(tmp_path))
    second = acquire(str(tmp_path))
    release(second)
    assert os.path.exists(first)
    release(first)
    assert not os.path.exists(first)


# ---------------------------------------------------------------- what the CLI prints
def test_an_unknown_key_is_one_line_with_a_suggestion(capsys):
    one_error(*cli(capsys, "--config", TINY, "--validate", "--runner_config.epoch", "2"), "runner_config.epoch",
              "did you mean 'epochs'")


def test_a_missing_config_file_is_one_line(capsys, tmp_path):
    one_error(*cli(capsys, "--config", tmp_path / "nope.yaml"), "nope.yaml", "no such file")


def test_an_undecodable_file_found_deep_in_a_run_is_still_one_line(capsys, tmp_path, monkeypatch):
    def train(self, config, **kwargs):
        b"ok \xff".decode("utf-8")

    monkeypatch.setattr(CausalLanguageModelingTrainer, "train", train)
    line = one_error(*cli(capsys, "--config", TINY, "--output_dir", tmp_path), "not UTF-8", "0xff")
    assert line != "error: utf-8"


def test_a_disk_error_found_deep_in_a_run_names_the_file(capsys, tmp_path, monkeypatch):
    def train(self, config, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/cache/tokens.npy")

    monkeypatch.setattr(CausalLanguageModelingTrainer, "train", train)
    one_error(*cli(capsys, "--config", TINY, "--output_dir", tmp_path), "/data/cache/tokens.npy", "No space left",
              "free space")


def test_a_bug_keeps_its_traceback(capsys, tmp_path, monkeypatch):
    def train(self, config, **kwargs):
        raise KeyError("a bug deep inside")

    monkeypatch.setattr(CausalLanguageModelingTrainer, "train", train)
    with pytest.raises(KeyError, match="a bug deep inside"):
        run_mindformer.main(["--config", TINY, "--output_dir", str(tmp_path)])
    assert not (tmp_path / "run.lock").exists()
