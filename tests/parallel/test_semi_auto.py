"""Semi-auto parallel (Ascend) mechanisms checked as built structure on CPU, where MindSpore cannot compile them:
the pipeline cell and train step, stage placement, expert and sequence-parallel strategies, per-rank checkpoints
written by the checkpoint callback and merged at load, and the config rules that refuse what is not wired."""
import json
import logging
import os

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn
from mindspore.parallel.nn import Pipeline
from mindspore.train import RunContext
from safetensors.numpy import load_file

from mindformers.checkpoint import load_weights
from mindformers.checkpoint.sharded import rank_slices, transform_checkpoint
from mindformers.config import ConfigError, load_config, validate_config
from mindformers.core.callback import CallbackParams, CheckpointMonitor
from mindformers.models import LlamaConfig, LlamaForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM
from mindformers.modules.layers import RMSNorm
from mindformers.parallel import MeshLayout, ShardPlan, apply_plan
from mindformers.parallel.batch import step_batch
from mindformers.parallel.semi_auto import SeqParallelRMSNorm, pipeline_cell, stage_group_ranks
from mindformers.trainer.builders import (apply_parallel_layout, build_dataset, build_tokenizer, build_train_step,
                                          train_batch)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = os.path.join(ROOT, "configs/llama/pretrain_llama_tiny.yaml")
TINY = dict(hidden_size=32, num_layers=4, num_heads=4, n_kv_heads=2, vocab_size=64, intermediate_size=48,
            seq_length=16, tie_word_embeddings=False)


def llama():
    return LlamaForCausalLM(LlamaConfig(**TINY))


def planned(net, **cfg):
    plan = ShardPlan.for_network(net, MeshLayout.from_config(cfg))
    apply_plan(net, plan)
    return plan


# ------------------------------------------------------------------ pipeline
def test_pipeline_cell_stages_and_micro_batches():
    net = llama()
    planned(net, pipeline_stage=2, micro_batch_num=4)
    cell = pipeline_cell(net, 4)
    assert isinstance(cell, Pipeline) and cell.micro_size == 4 and len(cell.micro_inputs) == 4
    assert [layer.pipeline_stage for layer in net.model.layers] == [0, 0, 1, 1]
    assert net.model.embed_tokens.pipeline_stage == 0 and net.model.pipeline_stage == 0  # mask, rotary tables
    assert net.model.norm.pipeline_stage == 1 and net.lm_head.pipeline_stage == 1
    assert net.pipeline_stage == 1  # the CausalLM's own ops: the head's cast and the loss, on the last stage
    loss_cell = getattr(net, "lm_loss", None)  # the loss as a cell (when the model has one): the last stage too
    assert loss_cell is None or loss_cell.pipeline_stage == 1
    assert net.model.layers[0].self_attn.q_proj.pipeline_stage == 0 and net.model.rotary_emb.pipeline_stage == 0
    assert net.model.layers[3].mlp.down_proj.pipeline_stage == 1  # every sub-cell set, not left to inheritance
    assert pipeline_cell(cell, 4) is cell
    with pytest.raises(ValueError, match=r"micro_batch_num \(1\) must be >= pipeline_stage \(2\)"):
        pipeline_cell(llama_planned_pp2(), 1)
    lay = MeshLayout.from_config({"data_parallel": 2, "model_parallel": 2, "pipeline_stage": 2, "micro_batch_num": 2})
    assert stage_group_ranks(lay, 5) == [1, 5]  # rank 5 = stage 1, dp 0, mp 1


def llama_planned_pp2():
    net = llama()
    planned(net, pipeline_stage=2, micro_batch_num=2)
    return net


@pytest.fixture
def semi_auto_context(monkeypatch):
    """What the pipeline step reads from MindSpore's auto-parallel context under semi-auto parallel."""
    import mindspore as ms
    values = {"parallel_mode": "semi_auto_parallel", "enable_parallel_optimizer": False, "gradients_mean": True}
    monkeypatch.setattr(ms, "get_auto_parallel_context", values.get)


def test_pipeline_train_step_is_built_from_the_plan(semi_auto_context, monkeypatch):
    """builders.build_train_step picks MFPipelineWithLossScaleCell for pipeline_stage > 1, with the plan's
    micro_batch_num; MindSpore's gradient buffers are the weights' accu_grads copies."""
    import mindformers.wrapper.wrapper as wrapper
    from mindformers.trainer.builders import build_train_step
    from mindformers.wrapper import MFPipelineWithLossScaleCell

    monkeypatch.setattr(wrapper, "create_stage_group", lambda layout, rank: "pp_stages_test")
    monkeypatch.setattr("mindspore.communication.get_rank", lambda *a: 0)
    config = load_config(BASE, validate=False)
    net = llama_planned_pp2()
    step, _, _ = build_train_step(config, net, planned_steps=100, accum=1)
    assert type(step) is MFPipelineWithLossScaleCell and step.micro_batch_num == 2
    assert isinstance(step.network, Pipeline) and step.network.network is net and step.network.micro_size == 2
    assert [p.name for p in step.accu_grads][:1] == ["accu_grads." + step.weights[0].name]
    assert step.stage_sum.group == "pp_stages_test"
    with pytest.raises(ValueError, match="gradient_accumulation_steps must be 1 under pipeline parallel"):
        MFPipelineWithLossScaleCell(llama_planned_pp2(), step.optimizer, micro_batch_num=2,
                                    gradient_accumulation_steps=2, stage_group="g")


def test_pipeline_train_step_needs_semi_auto_parallel():
    from mindformers.wrapper import MFPipelineWithLossScaleCell
    net = llama_planned_pp2()
    with pytest.raises(ValueError, match="pipeline parallel needs parallel_mode semi_auto_parallel"):
        MFPipelineWithLossScaleCell(net, nn.SGD(net.trainable_params()), micro_batch_num=2, stage_group="g")


def test_upstream_pipeline_yaml_batch_size_is_one_micro_batch(semi_auto_context, monkeypatch, caplog, pynative_mode):
    """An upstream 2.x pipeline YAML as it is (batch_size 1, micro_batch_num 4, pipeline_stage 2, 2 devices) is
    accepted; each step's dataset batch is 4 samples on both stages, logged once, lr_scale counts those 4, and the
    built pipeline step cuts the batch into 4 micro-batches of 1."""
    import mindformers.wrapper.wrapper as wrapper

    monkeypatch.setattr(wrapper, "create_stage_group", lambda layout, rank: "pp_stages_test")
    monkeypatch.setattr("mindspore.communication.get_rank", lambda *a: 0)
    config = ascend_semi_auto(**{"runner_config.batch_size": 1, "parallel_config.pipeline_stage": 2,
                                 "parallel_config.micro_batch_num": 4, "lr_scale": True})
    validate_config(config)
    with caplog.at_level(logging.INFO, logger="mindformers"):
        batch = train_batch(config, {"rank_id": 0, "device_num": 2})
    assert (batch.rows, batch.shard, batch.shards, batch.global_batch) == (4, 0, 1, 4)
    assert caplog.text.count("each worker reads 4 = batch_size 1 x micro_batch_num 4 per step; global batch 4") == 1
    assert step_batch(config, 1, 2) == batch  # the last stage reads the samples whose labels it scores
    env = {"rank_id": 1, "device_num": 2}
    ids = next(build_dataset(config, "train", build_tokenizer(config), 16, batch.rows, env).create_tuple_iterator())[0]
    assert ids.shape[0] == 4
    net = llama()
    apply_parallel_layout(config, net, env)
    with caplog.at_level(logging.INFO, logger="mindformers"):
        step, _, _ = build_train_step(config, net, planned_steps=100, accum=1, batch=batch)
    assert "(x 1 workers x batch 4 / 256)" in caplog.text
    assert step.micro_batch_num == 4 and step.network.micro_size == 4
    micro = [step.network.micro_inputs[i](i, ids)[0].asnumpy() for i in range(4)]
    for i, rows in enumerate(micro):
        np.testing.assert_array_equal(rows, ids.asnumpy()[i:i + 1])


@pytest.mark.parametrize("layout, parallel, expected", [
    # upstream's full_batch: False with dataset_strategy ((dp, 1), ...); ranks 0, 1 are stage 0, ranks 2, 3 stage 1
    ({"data_parallel": 2, "pipeline_stage": 2}, {"dataset_strategy": [[2, 1]]}, [(2, 0, 2), (2, 1, 2)] * 2),
    # full_batch: True: every rank reads the global batch, batch_size x micro_batch_num x data_parallel
    ({"data_parallel": 2, "pipeline_stage": 2}, {"full_batch": True}, [(4, 0, 1)] * 4),
    # no dataset_strategy: MindSpore splits the inputs over all devices of a stage (here mp 2)
    ({"model_parallel": 2, "pipeline_stage": 2}, {}, [(2, 0, 2), (2, 1, 2)] * 2),
    # no pipeline: the two ranks of an mp pair read the same shard; gradient accumulation stacks its micro-batches
    ({"data_parallel": 2, "model_parallel": 2}, {"dataset_strategy": [[2, 1]]}, [(3, 0, 2)] * 2 + [(3, 1, 2)] * 2),
    # data-parallel mode: batch_size per worker, as before
    ({"data_parallel": 4}, {"parallel_mode": 0}, [(3, r, 4) for r in range(4)]),
])
def test_each_rank_reads_its_shard_of_the_step_batch(layout, parallel, expected):
    accum, micro = (1, 2) if layout.get("pipeline_stage") else (3, 1)
    config = ascend_semi_auto(**{"runner_config.batch_size": 1, "runner_config.gradient_accumulation_steps": accum,
                                 **{f"parallel_config.{k}": v for k, v in {"micro_batch_num": micro, **layout}.items()},
                                 **{f"parallel.{k}": v for k, v in parallel.items()}})
    assert [(b.rows, b.shard, b.shards) for b in (step_batch(config, r, 4) for r in range(4))] == expected
    bad = ascend_semi_auto(**{"parallel_config.data_parallel": 4, "parallel.dataset_strategy": [[3, 1]]})
    with pytest.raises(ValueError, match=r"dataset_strategy \[\[3, 1\]\]: .* dividing the 4 devices of a stage"):
        step_batch(bad, 0, 4)


# ------------------------------------------------------------------ expert and sequence parallel
def test_expert_batchmatmul_strategies_and_groups():
    net = Qwen3MoeForCausalLM(Qwen3MoeConfig(**{**TINY, "num_layers": 1}, num_experts=4, num_experts_per_tok=2,
                                             moe_intermediate_size=16))
    plan = planned(net, data_parallel=4, expert_parallel=2, model_parallel=2)
    mlp = net.model.layers[0].mlp
    assert mlp.bmm.in_strategy == ((2, 2, 1), (2, 1, 1))  # experts over ep, tokens over dp / ep
    assert plan.params["model.layers.0.mlp.experts.0.gate_proj.weight"].split == (None, None)  # whole over mp
    # expert groups are contiguous blocks of dp / ep data indices: dp 0, 1 hold experts 0-1, dp 2, 3 experts 2-3
    lay = plan.layout
    assert [plan.holds("model.layers.0.mlp.experts.3.up_proj.weight", lay.rank(dp=d)) for d in range(4)] == \
        [False, False, True, True]
    with pytest.raises(ValueError, match=r"expert_parallel \(2\) spreads MoE experts, but this model has none"):
        ShardPlan.for_network(llama(), MeshLayout.from_config({"data_parallel": 2, "expert_parallel": 2}))
    moe = Qwen3MoeForCausalLM(Qwen3MoeConfig(**{**TINY, "num_layers": 2}, num_experts=4, num_experts_per_tok=2,
                                             moe_intermediate_size=16))
    with pytest.raises(ValueError, match=r"pipeline_stage > 1 is not wired for MoE models"):
        planned(moe, pipeline_stage=2, micro_batch_num=2)


def test_sequence_parallel_norms_and_reduce_scattered_outputs():
    net = llama()
    planned(net, data_parallel=2, model_parallel=2, use_seq_parallel=True)
    layer = net.model.layers[0]
    for norm in (layer.input_layernorm, layer.post_attention_layernorm, net.model.norm):
        assert isinstance(norm, SeqParallelRMSNorm) and norm.square.in_strategy == ((2, 2, 1),)
        assert norm.mul.in_strategy == ((2, 2, 1), (2, 2, 1)) and norm.mul_weight.in_strategy == ((2, 2, 1), (1,))
    assert layer.self_attn.o_proj.matmul.out_strategy == ((4, 1),)  # rows (tokens) over dp x mp
    assert layer.mlp.down_proj.matmul.out_strategy == ((4, 1),)
    assert "out_strategy" not in layer.self_attn.q_proj.matmul.attrs


def test_sequence_parallel_norm_computes_what_rmsnorm_does(pynative_mode):
    x = ms.Tensor(np.random.default_rng(0).standard_normal((2, 4, 32)).astype(np.float32))
    norm = RMSNorm(32)
    reference = norm(x).asnumpy()
    object.__setattr__(norm, "__class__", SeqParallelRMSNorm)
    norm.shard_sequence((1, 1, 1))
    np.testing.assert_allclose(norm(x).asnumpy(), reference, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ per-rank checkpoints
def test_semi_auto_ranks_save_their_slices_and_the_directory_merges(tmp_path):
    """Each rank's CheckpointMonitor writes checkpoint/rank_<r>/<prefix>-step<N>/ with its slices of the weights
    and AdamW moments, beside checkpoint/strategy.json; load_checkpoint on checkpoint/ merges them bit-exactly."""
    net = llama()
    plan = planned(net, model_parallel=2, pipeline_stage=2, micro_batch_num=2)
    optimizer = nn.AdamWeightDecay(net.trainable_params())
    full = {p.name: p.asnumpy() for p in net.get_parameters()}
    for rank in range(4):  # what every rank does at step 3 (the full weights are cut as its slices would be)
        cb = CallbackParams(cur_step_num=3, cur_epoch_num=1, net_outputs=1.5, network=net, optimizer=optimizer,
                            train_network=optimizer, rank_id=rank, output_dir=str(tmp_path))
        CheckpointMonitor(save_checkpoint_steps=3).on_train_step_end(RunContext(cb))
    root = tmp_path / "checkpoint"
    assert sorted(os.listdir(root)) == ["rank_0", "rank_1", "rank_2", "rank_3", "strategy.json"]
    assert json.loads((root / "strategy.json").read_text())["layout"]["pp"] == 2
    rank1 = root / "rank_1" / "mindformers-step3"  # stage 0, mp 1
    assert sorted(os.listdir(rank1)) == ["model.safetensors", "optimizer.safetensors", "state.json"]
    weights, moments = load_file(rank1 / "model.safetensors"), load_file(rank1 / "optimizer.safetensors")
    q = "model.layers.0.self_attn.q_proj.weight"
    np.testing.assert_array_equal(weights[q], full[q][16:])
    assert "lm_head.weight" not in weights and "model.layers.3.mlp.up_proj.weight" not in weights
    assert moments["adam_m." + q].shape == (16, 32) and "adam_m.lm_head.weight" not in moments
    assert load_file(root / "rank_3" / "mindformers-step3" / "model.safetensors")["lm_head.weight"].shape == (32, 32)
    assert json.loads((rank1 / "state.json").read_text())["rank"] == 1
    fresh = llama()
    assert "sharded" in load_weights(fresh, str(root))["file"]
    for name, value in full.items():
        np.testing.assert_array_equal(fresh.parameters_dict()[name].asnumpy(), value)
    merged = load_file(transform_checkpoint(str(root), str(tmp_path / "merged")))
    np.testing.assert_array_equal(merged[q], full[q])
    os.rename(root / "rank_2" / "mindformers-step3", root / "rank_2" / "x")
    with pytest.raises(FileNotFoundError, match="rank_0's latest checkpoint is mindformers-step3"):
        load_weights(llama(), str(root))
    assert plan.layout.device_num == 4


def test_rank_slices_refuse_a_shape_of_neither_layout():
    net = llama()
    plan = ShardPlan.for_network(net, MeshLayout.from_config({"model_parallel": 2}))
    q = "model.layers.0.self_attn.q_proj.weight"
    assert rank_slices({q: np.zeros((16, 32)), "global_step": np.zeros(1)}, plan, 1)[q].shape == (16, 32)
    with pytest.raises(ValueError, match=r"q_proj.weight: shape \(8, 32\) is neither the whole \(32, 32\) nor rank 1"):
        rank_slices({"adam_m." + q: np.zeros((8, 32))}, plan, 1, "optimizer state")


# ------------------------------------------------------------------ what is refused, and what is accepted
@pytest.mark.parametrize("options, key", [
    ({"parallel_config.pipeline_stage": 2, "parallel_config.micro_batch_num": 2}, "pipeline_stage"),
    ({"parallel_config.expert_parallel": 2}, "expert_parallel"),
    ({"parallel_config.use_seq_parallel": True}, "use_seq_parallel"),
    ({"parallel_config.optimizer_shard": True}, "optimizer_shard"),
])
def test_semi_auto_settings_are_refused_on_cpu_and_in_data_parallel_mode(options, key):
    for extra in ({}, {"use_parallel": True, "context.device_target": "Ascend"}):  # CPU; Ascend data parallel
        config = load_config(BASE, validate=False)
        config.merge_from_dict({**options, **extra})
        with pytest.raises(ConfigError) as err:
            validate_config(config)
        lines = str(err.value).splitlines()
        assert len(lines) == 1 and f"'parallel_config.{key}: " in lines[0]
        assert "needs Ascend semi-auto parallel" in lines[0]


@pytest.mark.parametrize("options, message", [
    ({"parallel_config.micro_batch_num": 2}, "micro_batch_num: 2' is not supported with pipeline_stage 1"),
    ({"parallel_config.context_parallel": 2}, "context parallel is planned (python -m mindformers.parallel) but not"),
])
def test_settings_not_wired_anywhere_are_refused(options, message):
    config = load_config(BASE, validate=False)
    config.merge_from_dict(options)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_config(config)


def ascend_semi_auto(**options):
    config = load_config(BASE, validate=False)
    config.context.device_target = "Ascend"
    config.merge_from_dict({"use_parallel": True, "parallel.parallel_mode": 1, **options})
    return config


def test_wired_settings_are_accepted_under_ascend_semi_auto_parallel():
    validate_config(ascend_semi_auto(**{"parallel_config.pipeline_stage": 2, "parallel_config.micro_batch_num": 4,
                                        "parallel_config.expert_parallel": 2, "parallel_config.data_parallel": 2,
                                        "parallel_config.use_seq_parallel": True,
                                        "parallel_config.optimizer_shard": True,
                                        "parallel_config.vocab_emb_dp": False, "parallel_config.model_parallel": 2}))
    for options, message in [
        ({"parallel_config.context_parallel": 2}, "context parallel is planned"),
        ({"parallel_config.pipeline_stage": 2, "parallel_config.micro_batch_num": 2,
          "runner_config.gradient_accumulation_steps": 2}, "gradient_accumulation_steps: 2' is not supported"),
    ]:
        with pytest.raises(ConfigError, match=message):
            validate_config(ascend_semi_auto(**options))
