"""TensorBoard scalars, the loss-curve PNG, the progress bar and the profiler, on short in-process runs."""
import glob
import io
import os
import struct

import pytest

from mindformers.config import load_config
from mindformers.core.callback.observers import ProfileCallback, ProgressBar
from mindformers.trainer.causal_lm import CausalLanguageModelingTrainer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "configs/llama/pretrain_llama_tiny.yaml")
SMALL = {"runner_config.batch_size": 2, "model.model_config.num_layers": 1, "model.model_config.hidden_size": 32,
         "model.model_config.intermediate_size": 64, "model.model_config.num_heads": 4,
         "model.model_config.n_kv_heads": 2, "model.model_config.seq_length": 32}


def read_scalars(directory):
    """tag -> [(step, value)] from the tfevents files under `directory` (TFRecord framing, Event protos)."""
    from tensorboardX.proto import event_pb2
    out = {}
    for path in glob.glob(os.path.join(directory, "**", "events.out.tfevents.*"), recursive=True):
        data = open(path, "rb").read()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def test_tensorboard_scalars_and_loss_curve(tmp_path):
    board = tmp_path / "tb"
    config = load_config(TINY, {**SMALL, "output_dir": str(tmp_path), "runner_config.stop_step": 4,
                                "do_eval": True, "eval_step_interval": 2,
                                "tensorboard.tensorboard_dir": str(board),
                                "tensorboard.log_loss_scale_to_tensorboard": True,
                                "tensorboard.log_timers_to_tensorboard": True})
    history = CausalLanguageModelingTrainer().train(config)
    scalars = read_scalars(board)
    assert [s for s, _ in scalars["train/loss"]] == [1, 2, 3, 4]
    assert [round(v, 4) for _, v in scalars["train/loss"]] == [round(r["loss"], 4) for r in history]
    assert [s for s, _ in scalars["eval/loss"]] == [2, 4] and len(scalars["eval/perplexity"]) == 2
    for tag in ("train/learning_rate", "train/grad_norm", "train/tokens_per_second", "train/loss_scale",
                "timers/step_time_s"):
        assert len(scalars[tag]) == 4, tag
    png = (tmp_path / "log" / "loss_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (800, 450) and len(png) > 10_000


def test_progress_bar_draws_on_a_terminal_only(tmp_path):
    config = load_config(TINY, {**SMALL, "output_dir": str(tmp_path), "runner_config.stop_step": 3})
    stream = io.StringIO()
    CausalLanguageModelingTrainer().train(config, callbacks=[ProgressBar(stream=stream, force=True)])
    text = stream.getvalue()
    assert "train" in text and "3/3" in text and "loss=" in text
    assert not ProgressBar(stream=io.StringIO()).active()  # not a tty: no bar, logs only


@pytest.mark.slow
def test_profiler_writes_its_output_for_the_chosen_steps(tmp_path):
    config = load_config(TINY, {**SMALL, "output_dir": str(tmp_path), "runner_config.stop_step": 4, "profile": True,
                                "profile_start_step": 2, "profile_stop_step": 3})
    CausalLanguageModelingTrainer().train(config)
    files = glob.glob(str(tmp_path / "profile" / "**" / "*"), recursive=True)
    assert any(f.endswith("cpu_op_type_info_0.csv") for f in files), files[:20]


def test_ascend_only_profile_keys_are_refused_on_cpu(tmp_path):
    with pytest.raises(ValueError, match=r"profile_memory: MindSpore collects these on Ascend devices only"):
        ProfileCallback(str(tmp_path), profile_memory=True)
    with pytest.raises(ValueError, match=r"must satisfy 1 <= start <= stop"):
        ProfileCallback(str(tmp_path), profile_start_step=5, profile_stop_step=2)
    assert not ProfileCallback(str(tmp_path), profile_rank_ids=[1], rank_id=0).enabled
