"""resume_training from a semi-auto parallel run's per-rank checkpoints, on CPU: four fake ranks (mp 2 x pp 2) save
their slices of three real AdamW steps as the checkpoint callback does on each rank; the resume path merges every
rank's weights and optimizer state back into whole tensors, bit-exactly, for either form of resume_training, and
a rank without the step resumed is a one-line error naming both. (The compile that cuts those whole tensors to a
rank's slices needs Ascend; what it slices is checked in tests/core/test_optimizers.py.)"""
import os
import shutil

import numpy as np
import pytest
from mindspore import Tensor
from mindspore.train import RunContext
from safetensors.numpy import load_file

from mindformers.checkpoint import find_resume_checkpoint, load_train_state, read_state, snapshot
from mindformers.config import MindFormerConfig, load_config, validate_config
from mindformers.core.callback import CallbackParams, CheckpointMonitor
from mindformers.core.optim import AdamW
from mindformers.models import LlamaConfig, LlamaForCausalLM
from mindformers.parallel import MeshLayout, ShardPlan, apply_plan
from mindformers.trainer.builders import build_model
from mindformers.wrapper import MFTrainOneStepCell

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = dict(hidden_size=32, num_layers=4, num_heads=4, n_kv_heads=2, vocab_size=64, intermediate_size=48,
            seq_length=16, tie_word_embeddings=False)
LAYOUT = dict(model_parallel=2, pipeline_stage=2, micro_batch_num=2)
IDS = np.random.default_rng(0).integers(0, 64, (2, 17)).astype(np.int32)


def planned_step():
    """The tiny Llama with the mp 2 x pp 2 plan applied and its AdamW train step, as the trainer builds them."""
    net = LlamaForCausalLM(LlamaConfig(**TINY))
    apply_plan(net, ShardPlan.for_network(net, MeshLayout.from_config(LAYOUT)))
    step = MFTrainOneStepCell(net, AdamW(net.trainable_params(), learning_rate=1e-2))
    step.set_train(True)
    return net, step


@pytest.fixture(scope="module")
def saved_run(pynative_mode, tmp_path_factory):
    """checkpoint/ of a run saved at steps 2 and 3 by every rank; the whole state (weights, train-step state) at
    each save."""
    out = tmp_path_factory.mktemp("run")
    net, step = planned_step()
    full = {}
    for n in (1, 2, 3):
        step(Tensor(IDS))
        if n == 1:
            continue
        full[n] = snapshot(net, step, copy=True)
        for rank in range(4):  # each rank cuts its slices of the (here whole) state
            cb = CallbackParams(cur_step_num=n, cur_epoch_num=1, net_outputs=1.5, network=net, optimizer=step.optimizer,
                                train_network=step, rank_id=rank, output_dir=str(out), consumed_samples=2 * n)
            CheckpointMonitor(save_checkpoint_steps=1).on_train_step_end(RunContext(cb))
    return out / "checkpoint", full


def copy_of(saved_run, tmp_path):
    return shutil.copytree(saved_run[0], tmp_path / "checkpoint")


@pytest.mark.parametrize("resume, step", [(True, 3), ("mindformers-step2", 2)])
def test_resume_merges_every_rank_weights_and_optimizer_state_bit_exactly(saved_run, resume, step):
    root, full = saved_run
    assert os.path.isfile(root / "rank_3" / "mindformers-step3" / "optimizer.safetensors")
    resume_dir = find_resume_checkpoint(str(root), resume)  # what the trainer does with resume_training
    assert resume_dir == str(root / "rank_0" / f"mindformers-step{step}")
    state = read_state(resume_dir)
    assert (state["step"], state["epoch"], state["consumed_samples"]) == (step, 1, 2 * step)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert load_file(root / "rank_1" / f"mindformers-step{step}" / "optimizer.safetensors")["adam_m." + q].shape == \
        (16, 32)  # rank 1 (stage 0, mp 1) saved its half
    net, train_step = planned_step()
    assert not np.array_equal(net.parameters_dict()[q].asnumpy(), full[step][0][q])  # a fresh start differs
    assert not train_step.optimizer.moments1[0].asnumpy().any()
    build_model(MindFormerConfig(load_checkpoint=resume_dir), net)  # load_checkpoint becomes the resumed step
    load_train_state(train_step, resume_dir, net)
    weights, opt_state = snapshot(net, train_step, copy=True)
    assert weights.keys() == full[step][0].keys() and opt_state.keys() == full[step][1].keys()
    assert any(k.startswith("adam_v.") for k in opt_state) and "global_step" in opt_state
    for name, value in [*full[step][0].items(), *full[step][1].items()]:
        got = weights.get(name, opt_state.get(name))
        assert got.shape == value.shape and got.dtype == value.dtype, name  # whole, as before a compile
        np.testing.assert_array_equal(got, value, err_msg=name)
    assert not np.array_equal(full[2][1]["adam_m.lm_head.weight"], full[3][1]["adam_m.lm_head.weight"])


def test_a_rank_without_the_step_is_one_line_naming_both(saved_run, tmp_path):
    root = copy_of(saved_run, tmp_path)
    shutil.rmtree(root / "rank_3" / "mindformers-step3")
    with pytest.raises(FileNotFoundError) as err:
        find_resume_checkpoint(str(root), True)
    assert str(err.value) == (f"resume_training: rank_3 lacks mindformers-step3 in {root} ({root}/rank_3 holds "
                              f"mindformers-step2; all 4 ranks of strategy.json must hold the step resumed)")
    assert find_resume_checkpoint(str(root), "mindformers-step2").endswith("rank_0/mindformers-step2")
    shutil.rmtree(root / "rank_2")
    with pytest.raises(FileNotFoundError, match=r"^resume_training: rank_2 lacks mindformers-step2 in .*rank_2 does "
                                                r"not exist; all 4 ranks"):
        find_resume_checkpoint(str(root), "mindformers-step2")
    with pytest.raises(FileNotFoundError, match=r"^resume_training: no complete checkpoint 'mindformers-step9' in "
                                                r".*rank_0$"):
        find_resume_checkpoint(str(root), "mindformers-step9")


@pytest.mark.parametrize("resume", [True, "mindformers-step2"])
def test_resume_training_is_accepted_under_ascend_semi_auto_parallel(resume):
    config = load_config(os.path.join(ROOT, "configs/llama/pretrain_llama_tiny.yaml"), validate=False)
    config.context.device_target = "Ascend"
    config.merge_from_dict({"use_parallel": True, "parallel.parallel_mode": 1, "parallel_config.model_parallel": 2,
                            "resume_training": resume, "load_checkpoint": "output/checkpoint"})
    validate_config(config)
