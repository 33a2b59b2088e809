"""Sharded checkpoints: cut with one plan, merged exactly, re-sliced for another layout, loaded automatically."""
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from mindformers.checkpoint import load_weights
from mindformers.checkpoint.sharded import merge_sharded, save_sharded, shard_weights, transform_checkpoint
from mindformers.models import LlamaConfig, LlamaForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM
from mindformers.parallel import MeshLayout, ShardPlan

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = dict(hidden_size=32, num_layers=4, num_heads=4, n_kv_heads=2, vocab_size=64, intermediate_size=48,
            seq_length=16, tie_word_embeddings=False)


def weights_of(net):
    return {p.name: p.asnumpy() for p in net.get_parameters()}


@pytest.fixture(scope="module")
def llama():
    return LlamaForCausalLM(LlamaConfig(**TINY))


def plan(net, **cfg):
    return ShardPlan.for_network(net, MeshLayout.from_config(cfg))


def test_shards_hold_their_slices_and_merge_bit_exactly(llama, tmp_path):
    full = weights_of(llama)
    p = plan(llama, data_parallel=2, model_parallel=2, pipeline_stage=2, micro_batch_num=2)
    save_sharded(full, p, tmp_path / "ckpt")
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["rank_0", "rank_1", "rank_2", "rank_3", "rank_4", "rank_5",
                                                     "rank_6", "rank_7", "strategy.json"]
    rank5 = load_file(tmp_path / "ckpt" / "rank_5" / "model.safetensors")  # stage 1, dp 0, mp 1
    assert "model.layers.0.self_attn.q_proj.weight" not in rank5 and "lm_head.weight" in rank5
    np.testing.assert_array_equal(rank5["model.layers.3.self_attn.o_proj.weight"],
                                  full["model.layers.3.self_attn.o_proj.weight"][:, 16:])
    np.testing.assert_array_equal(rank5["lm_head.weight"], full["lm_head.weight"][32:])
    merged = merge_sharded(tmp_path / "ckpt")
    assert merged.keys() == full.keys()
    for name, value in full.items():
        np.testing.assert_array_equal(merged[name], value)


def test_reslice_between_layouts_round_trips(llama, tmp_path):
    full = weights_of(llama)
    save_sharded(full, plan(llama, model_parallel=2, data_parallel=2), tmp_path / "mp4")
    target = plan(llama, data_parallel=2, pipeline_stage=2, micro_batch_num=2, model_parallel=1)
    target.save(tmp_path / "target.json")
    out = subprocess.run([sys.executable, "-m", "mindformers.tools.transform_ckpt", "--src_checkpoint",
                          str(tmp_path / "mp4"), "--dst_checkpoint", str(tmp_path / "pp2"), "--dst_strategy",
                          str(tmp_path / "target.json")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "(dp=2, mp=2, pp=1, cp=1, ep=1)" in out.stdout and "4 shards" in out.stdout
    for rank in range(4):
        expected = shard_weights(full, target, rank)
        got = load_file(tmp_path / "pp2" / f"rank_{rank}" / "model.safetensors")
        assert got.keys() == expected.keys()
        for name in expected:
            np.testing.assert_array_equal(got[name], expected[name])
    single = transform_checkpoint(tmp_path / "pp2", tmp_path / "one")
    merged = load_file(single)
    for name, value in full.items():
        np.testing.assert_array_equal(merged[name], value)


def test_experts_merge_from_their_groups(tmp_path):
    net = Qwen3MoeForCausalLM(Qwen3MoeConfig(**{**TINY, "num_layers": 1}, num_experts=4, num_experts_per_tok=2,
                                             moe_intermediate_size=16))
    full = weights_of(net)
    save_sharded(full, plan(net, data_parallel=2, expert_parallel=2, model_parallel=2), tmp_path / "moe")
    rank0 = load_file(tmp_path / "moe" / "rank_0" / "model.safetensors")
    assert "model.layers.0.mlp.experts.0.gate_proj.weight" in rank0
    assert "model.layers.0.mlp.experts.2.gate_proj.weight" not in rank0
    merged = merge_sharded(tmp_path / "moe")
    for name, value in full.items():
        np.testing.assert_array_equal(merged[name], value)


def test_load_checkpoint_merges_a_sharded_directory(llama, tmp_path):
    save_sharded(weights_of(llama), plan(llama, model_parallel=2), tmp_path / "ckpt")
    fresh = LlamaForCausalLM(LlamaConfig(**TINY))
    info = load_weights(fresh, str(tmp_path / "ckpt"))
    assert "sharded" in info["file"]
    for name, value in weights_of(llama).items():
        np.testing.assert_array_equal(fresh.parameters_dict()[name].asnumpy(), value)


def test_damaged_shards_are_clear_errors(llama, tmp_path):
    save_sharded(weights_of(llama), plan(llama, model_parallel=2), tmp_path / "ckpt")
    os.remove(tmp_path / "ckpt" / "rank_1" / "model.safetensors")
    with pytest.raises(FileNotFoundError, match=r"rank_1/model.safetensors is missing .strategy.json describes 2"):
        merge_sharded(tmp_path / "ckpt")
    out = subprocess.run([sys.executable, "-m", "mindformers.tools.transform_ckpt", "--src_checkpoint",
                          str(tmp_path), "--dst_checkpoint", str(tmp_path / "x")], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and "not a sharded checkpoint directory (no strategy.json" in out.stderr
