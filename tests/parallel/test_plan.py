"""Shard plans on CPU: mesh checks, per-parameter layouts, op strategies, and the layout-check CLI."""
import os
import subprocess
import sys

import pytest

from mindformers.config import load_config, validate_config
from mindformers.models import LlamaConfig, LlamaForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM
from mindformers.parallel import MeshLayout, ShardPlan, apply_plan, plan_from_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = dict(hidden_size=32, num_layers=4, num_heads=4, n_kv_heads=2, vocab_size=64, intermediate_size=48,
            seq_length=16)


@pytest.fixture(scope="module")
def llama():
    return LlamaForCausalLM(LlamaConfig(**TINY))


def layout(**kw):
    keys = {"dp": "data_parallel", "mp": "model_parallel", "pp": "pipeline_stage", "cp": "context_parallel",
            "ep": "expert_parallel", "mb": "micro_batch_num"}
    return MeshLayout.from_config({keys[k]: v for k, v in kw.items()})


def test_mesh_coordinates_round_trip_with_mp_fastest():
    lay = layout(dp=2, mp=2, pp=2, mb=2)
    assert lay.device_num == 8
    assert [lay.coords(r)["mp"] for r in range(4)] == [0, 1, 0, 1]
    assert lay.coords(5) == {"pp": 1, "dp": 0, "cp": 0, "mp": 1}
    assert all(lay.rank(**lay.coords(r)) == r for r in range(8))


@pytest.mark.parametrize("cfg, devices, message", [
    ({"data_parallel": 2, "model_parallel": 2}, 8, r"= 4, but 8 devices run"),
    ({"data_parallel": 2, "expert_parallel": 4}, None, r"expert_parallel \(4\) must divide data_parallel \(2\)"),
    ({"pipeline_stage": 2, "micro_batch_num": 1}, None, r"micro_batch_num \(1\) must be >= pipeline_stage \(2\)"),
    ({"model_parallel": 0}, None, r"parallel_config.model_parallel must be an int >= 1, got 0"),
    ({"use_seq_parallel": "yes"}, None, r"use_seq_parallel must be true or false"),
])
def test_mesh_errors_name_the_key(cfg, devices, message):
    with pytest.raises(ValueError, match=message):
        MeshLayout.from_config(cfg, devices)


def test_llama_layouts_column_row_vocab_and_stages(llama):
    plan = ShardPlan.for_network(llama, layout(dp=1, mp=2, pp=2, mb=2))
    p = plan.params
    assert p["model.layers.0.self_attn.q_proj.weight"].split == ("mp", None)
    assert p["model.layers.0.self_attn.o_proj.weight"].split == (None, "mp")
    assert p["model.layers.3.mlp.down_proj.weight"].split == (None, "mp")
    assert p["model.layers.0.input_layernorm.weight"].split == (None,)
    assert p["model.embed_tokens.weight"].split == (None, None)          # vocab_emb_dp defaults to True
    assert p["lm_head.weight"].split == ("mp", None)
    assert [plan.stage_of_layer(i) for i in range(4)] == [0, 0, 1, 1]
    assert p["model.embed_tokens.weight"].stages == (0,) and p["lm_head.weight"].stages == (1,)
    assert p["model.layers.2.mlp.up_proj.weight"].stages == (1,)
    # rank 1 = stage 0, mp 1: the second half of q_proj rows, no stage-1 layers
    assert plan.holds("model.layers.0.self_attn.q_proj.weight", 1)
    assert not plan.holds("model.layers.3.self_attn.q_proj.weight", 1)
    assert plan.slice_index("model.layers.0.self_attn.q_proj.weight", 1) == (slice(16, 32), slice(None))
    assert plan.local_shape("model.layers.0.self_attn.k_proj.weight") == (8, 32)
    vocab_split = ShardPlan.for_network(llama, MeshLayout.from_config({"model_parallel": 2, "vocab_emb_dp": False}))
    assert vocab_split.params["model.embed_tokens.weight"].split == ("mp", None)


@pytest.mark.parametrize("cfg, message", [
    ({"model_parallel": 4}, r"model_parallel \(4\) must divide model_config.n_kv_heads \(2\)"),
    ({"model_parallel": 3}, r"model_parallel \(3\) must divide model_config.num_heads \(4\)"),
    ({"pipeline_stage": 8, "micro_batch_num": 8}, r"pipeline_stage \(8\) exceeds model_config.num_layers \(4\)"),
    ({"context_parallel": 3}, r"context_parallel \(3\) must divide model_config.seq_length \(16\)"),
])
def test_model_divisibility_errors(llama, cfg, message):
    with pytest.raises(ValueError, match=message):
        ShardPlan.for_network(llama, MeshLayout.from_config(cfg))


def test_glm4_fused_gate_up_is_replicated():
    from mindformers.models.glm4.glm4 import Glm4Config, Glm4ForCausalLM
    net = Glm4ForCausalLM(Glm4Config(**{**TINY, "num_layers": 1}))
    plan = ShardPlan.for_network(net, layout(mp=2))
    assert plan.params["model.layers.0.mlp.gate_up_proj.weight"].split == (None, None)
    assert plan.params["model.layers.0.mlp.down_proj.weight"].split == (None, "mp")


def test_experts_spread_over_expert_parallel_groups():
    net = Qwen3MoeForCausalLM(Qwen3MoeConfig(**{**TINY, "num_layers": 1}, num_experts=4, num_experts_per_tok=2,
                                             moe_intermediate_size=16))
    plan = ShardPlan.for_network(net, layout(dp=2, ep=2))
    assert plan.params["model.layers.0.mlp.experts.1.gate_proj.weight"].expert_group == 0
    assert plan.params["model.layers.0.mlp.experts.3.gate_proj.weight"].expert_group == 1
    assert plan.params["model.layers.0.mlp.gate.weight"].expert_group is None  # the router is replicated
    assert plan.holds("model.layers.0.mlp.experts.3.up_proj.weight", 1)
    assert not plan.holds("model.layers.0.mlp.experts.3.up_proj.weight", 0)
    with pytest.raises(ValueError, match=r"expert_parallel \(8\) must divide the number of experts \(4\)"):
        ShardPlan.for_network(net, layout(dp=8, ep=8))


def test_apply_plan_sets_mindspore_strategies_and_stages(llama):
    plan = ShardPlan.for_network(llama, layout(dp=2, mp=2, pp=2, mb=4))
    applied = apply_plan(llama, plan)
    attn = llama.model.layers[0].self_attn
    assert attn.q_proj.matmul.in_strategy == ((2, 1), (2, 1))
    assert attn.o_proj.matmul.in_strategy == ((2, 2), (1, 2))
    assert llama.model.layers[0].mlp.down_proj.matmul.in_strategy == ((2, 2), (1, 2))
    assert llama.lm_head.matmul.in_strategy == ((2, 1), (2, 1))
    assert attn.scores.in_strategy == ((2, 2, 1, 1), (2, 2, 1, 1))
    assert [layer.pipeline_stage for layer in llama.model.layers] == [0, 0, 1, 1]
    assert llama.lm_head.pipeline_stage == 1 and llama.model.embed_tokens.pipeline_stage == 0
    assert applied["model.layers.1.mlp.gate_proj"] == ((2, 1), (2, 1))
    assert llama.model.embed_tokens.gather.in_strategy == ((1, 1), (2, 1))  # vocab_emb_dp: table replicated
    vocab_split = MeshLayout.from_config({"data_parallel": 2, "model_parallel": 2, "vocab_emb_dp": False})
    apply_plan(llama, ShardPlan.for_network(llama, vocab_split))
    assert llama.model.embed_tokens.gather.in_strategy == ((2, 1), (2, 1))


def test_strategy_file_round_trip(llama, tmp_path):
    plan = ShardPlan.for_network(llama, layout(dp=2, mp=2))
    plan.save(tmp_path / "s.json")
    again = ShardPlan.load(tmp_path / "s.json")
    assert again.layout == plan.layout and again.params == plan.params
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="bad.json: not a mindformers-shard-plan/1 file"):
        ShardPlan.load(tmp_path / "bad.json")


def test_real_size_plan_without_allocating_weights():
    """Llama-3-8B's plan is built from shapes only (no_init_parameters): memory stays far below 32 GB."""
    config = load_config(os.path.join(ROOT, "configs/llama/predict_llama3_8b.yaml"),
                         {"parallel_config.data_parallel": 2, "parallel_config.model_parallel": 8,
                          "parallel_config.pipeline_stage": 4, "parallel_config.micro_batch_num": 8}, validate=False)
    validate_config(config, run=False)  # planned, as python -m mindformers.parallel checks it
    plan = plan_from_config(config, 64)
    assert plan.params["model.layers.31.mlp.gate_proj.weight"].shape == (14336, 4096)
    assert plan.params["model.layers.31.mlp.gate_proj.weight"].stages == (3,)
    # rank 0: the whole embedding (vocab_emb_dp) and an mp-slice of each of stage 0's 8 layers, in fp32
    layer = (4096 * 4096 * 2 + 1024 * 4096 * 2 + 14336 * 4096 * 3) // 8 + 2 * 4096
    assert plan.rank_bytes(0) == 4 * (128256 * 4096 + 8 * layer)
    assert max(plan.rank_bytes(r) for r in range(64)) == plan.rank_bytes(0)


def test_cli_prints_the_plan_and_names_a_bad_key(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "mindformers.parallel", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=120, env=dict(os.environ, GLOG_v="3"))

    out = run("--config", "configs/qwen3/predict_qwen3_8b.yaml", "--device_num", "8", "--options",
              "parallel_config.model_parallel=4", "parallel_config.data_parallel=2",
              "--save_strategy", str(tmp_path / "s.json"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "mesh: dp=2 mp=4 pp=1 cp=1 ep=1 -> 8 devices" in out.stdout
    assert "model.layers.0.self_attn.q_proj.weight" in out.stdout and (tmp_path / "s.json").exists()
    out = run("--config", "configs/qwen3/predict_qwen3_8b.yaml", "--device_num", "8", "--options",
              "parallel_config.model_parallel=16")
    assert out.returncode == 2 and "= 16, but 8 devices run" in out.stderr and "Traceback" not in out.stderr
