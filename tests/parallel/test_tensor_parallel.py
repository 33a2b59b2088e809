"""Tensor parallel in data-parallel mode (parallel/tensor_parallel.py): the slicing plan in one process, and a
2-worker msrun run (mp=2) that trains like one process, saves one whole checkpoint and resumes."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from mindformers.config import ConfigError, MindFormerConfig, validate_config
from mindformers.models.llama import LlamaConfig, LlamaForCausalLM
from mindformers.parallel import MeshLayout
from mindformers.parallel.tensor_parallel import (ColumnParallelLinear, RowParallelLinear, TensorParallel,
                                                  apply_tensor_parallel, data_parallel_rank)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(REPO, "configs", "llama", "pretrain_llama_tiny.yaml")


def tiny_llama(**changes):
    config = dict(hidden_size=32, num_layers=2, num_heads=4, n_kv_heads=2, vocab_size=64, seq_length=8,
                  intermediate_size=48, qkv_has_bias=True)
    return LlamaForCausalLM(LlamaConfig(**{**config, **changes}))


def full_weights(net):
    return {p.name: p.asnumpy().copy() for p in net.get_parameters()}


def test_grid_groups_mp_fastest():
    tp = TensorParallel(dp=2, mp=2, rank=3)
    assert (tp.dp_rank, tp.mp_rank) == (1, 1)
    assert (tp.mp_ranks, tp.dp_ranks) == ([2, 3], [1, 3])
    assert tp.mp_group != TensorParallel(2, 2, 0).mp_group and tp.dp_group == TensorParallel(2, 2, 1).dp_group
    with pytest.raises(ValueError, match="outside the dp x mp grid"):
        TensorParallel(1, 2, 2)


@pytest.mark.parametrize("rank", [0, 1])
def test_model_is_cut_into_this_ranks_slices_with_the_same_names(rank):
    net = tiny_llama()
    before = full_weights(net)
    tp = apply_tensor_parallel(net, MeshLayout(dp=1, mp=2), rank, create_groups=False)
    assert net.tensor_parallel is tp
    after = full_weights(net)
    assert sorted(after) == sorted(before)  # names unchanged: checkpoints and optimizer state keep their keys
    attn, mlp = net.model.layers[0].self_attn, net.model.layers[0].mlp
    assert isinstance(attn.q_proj, ColumnParallelLinear) and isinstance(attn.o_proj, RowParallelLinear)
    assert isinstance(mlp.up_proj, ColumnParallelLinear) and isinstance(mlp.down_proj, RowParallelLinear)
    assert isinstance(net.lm_head, ColumnParallelLinear) and net.lm_head.gather is not None
    assert (attn.n_heads, attn.n_kv_heads, attn.n_rep) == (2, 1, 2)
    half = slice(rank * 16, (rank + 1) * 16)
    name = "model.layers.0.self_attn"
    np.testing.assert_array_equal(after[f"{name}.q_proj.weight"], before[f"{name}.q_proj.weight"][half])
    np.testing.assert_array_equal(after[f"{name}.q_proj.bias"], before[f"{name}.q_proj.bias"][half])
    np.testing.assert_array_equal(after[f"{name}.o_proj.weight"], before[f"{name}.o_proj.weight"][:, half])
    np.testing.assert_array_equal(after["model.layers.1.mlp.down_proj.weight"],
                                  before["model.layers.1.mlp.down_proj.weight"][:, rank * 24:(rank + 1) * 24])
    np.testing.assert_array_equal(after["lm_head.weight"], before["lm_head.weight"][rank * 32:(rank + 1) * 32])
    for replicated in ("model.embed_tokens.weight", "model.norm.weight", "model.layers.0.input_layernorm.weight"):
        np.testing.assert_array_equal(after[replicated], before[replicated])
        assert replicated not in tp.split
    assert tp.split[f"{name}.o_proj.weight"] == 1 and tp.split["lm_head.weight"] == 0
    assert len(tp.split) == 2 * (3 + 3 + 1 + 3) + 1  # q/k/v weights, their biases, o, gate/up/down; lm_head


def _family(name):
    from mindformers.models.qwen2 import Qwen2Config, Qwen2ForCausalLM
    from mindformers.models.qwen3 import Qwen3Config, Qwen3ForCausalLM
    from mindformers.models.qwen3_moe import Qwen3MoeConfig, Qwen3MoeForCausalLM
    size = dict(hidden_size=32, num_layers=1, num_heads=4, n_kv_heads=2, vocab_size=64, seq_length=8,
                intermediate_size=48)
    return {"qwen2": lambda: Qwen2ForCausalLM(Qwen2Config(**size)),
            "qwen3": lambda: Qwen3ForCausalLM(Qwen3Config(**size, head_dim=16)),
            "qwen3_moe": lambda: Qwen3MoeForCausalLM(Qwen3MoeConfig(**size, num_experts=4, num_experts_per_tok=2,
                                                                    moe_intermediate_size=16))}[name]()


@pytest.mark.parametrize("family", ["qwen2", "qwen3", "qwen3_moe"])
def test_families_split_attention_and_dense_mlp_only(family):
    net = _family(family)
    before = full_weights(net)
    tp = apply_tensor_parallel(net, MeshLayout(dp=1, mp=2), 1, create_groups=False)
    attn = net.model.layers[0].self_attn
    assert (attn.n_heads, attn.n_kv_heads) == (2, 1)
    # Qwen3's head_dim 16 (not hidden / heads): q is 4 x 16 wide, so each rank holds 2 heads = 32 rows
    assert attn.q_proj.weight.shape[0] == attn.n_heads * attn.head_dim
    assert all(".experts." not in name and ".gate." not in name for name in tp.split)  # MoE stays whole
    for name, value in full_weights(net).items():
        if name not in tp.split:
            np.testing.assert_array_equal(value, before[name])  # norms (Qwen3's per-head q/k norms), router, experts


def test_tied_head_and_kv_heads_that_do_not_divide():
    net = tiny_llama(tie_word_embeddings=True)
    tp = apply_tensor_parallel(net, MeshLayout(dp=1, mp=2), 0, create_groups=False)
    assert "lm_head.weight" not in tp.split  # the tied head uses the replicated embedding: stays whole
    with pytest.raises(ValueError, match=r"model_parallel \(4\) must divide the 2 key/value heads"):
        apply_tensor_parallel(tiny_llama(), MeshLayout(dp=1, mp=4), 0, create_groups=False)
    with pytest.raises(ValueError, match="pipeline_stage and context_parallel to 1"):
        apply_tensor_parallel(tiny_llama(), MeshLayout(dp=1, mp=2, pp=2), 0, create_groups=False)


def test_checkpoint_state_slices_and_gathers_back():
    """local_state cuts whole tensors (weights and `<prefix>.<name>` optimizer moments); the zero-padded slices of
    all mp ranks sum to the whole tensor, which is what full_state's AllReduce computes."""
    full = full_weights(tiny_llama())
    full.update({f"adam_m.{k}": v + 1 for k, v in full.items()})
    full["global_step"] = np.array([3], np.int32)
    ranks = []
    for rank in range(2):
        tp = apply_tensor_parallel(tiny_llama(), MeshLayout(dp=1, mp=2), rank, create_groups=False)
        ranks.append((tp, tp.local_state(full)))
    local0 = ranks[0][1]
    assert local0["adam_m.lm_head.weight"].shape == (32, 32) and local0["global_step"].tolist() == [3]
    for key, whole in full.items():
        if ranks[0][0]._owner(key) is None:  # pylint: disable=protected-access
            continue
        summed = sum(tp.padded(key, local[key]) for tp, local in ranks)
        np.testing.assert_array_equal(summed, whole)
    with pytest.raises(ValueError, match="only elementwise optimizer state can be split"):
        ranks[0][0].local_state({"adafactor_row.lm_head.weight": np.zeros((64,), np.float32)})


def test_data_shards_follow_the_data_parallel_rank():
    cfg = MindFormerConfig(use_parallel=True, parallel={"parallel_mode": 0},
                           parallel_config={"data_parallel": 2, "model_parallel": 2})
    assert [data_parallel_rank(cfg, r, 4) for r in range(4)] == [(0, 2), (0, 2), (1, 2), (1, 2)]
    cfg.use_parallel = False
    assert data_parallel_rank(cfg, 1, 2) == (1, 2)


def _tiny_config(**changes) -> MindFormerConfig:
    from mindformers.config import load_config
    config = load_config(TINY, validate=False)
    config.merge_from_dict(changes)
    return config


def test_config_check_accepts_model_parallel_in_data_parallel_mode_only():
    validate_config(_tiny_config(**{"use_parallel": True, "parallel_config.model_parallel": 2}))
    with pytest.raises(ConfigError, match="'parallel_config.model_parallel: 2' is not supported on CPU"):
        validate_config(_tiny_config(**{"parallel_config.model_parallel": 2}))  # one process
    with pytest.raises(ConfigError, match="'parallel_config.pipeline_stage: 2' is not supported"):
        validate_config(_tiny_config(**{"use_parallel": True, "parallel_config.model_parallel": 2,
                                        "parallel_config.pipeline_stage": 2}))


# ---------------------------------------------------------------------------------------------- msrun, 2 workers
STEPS, SAVE_AT = 20, 10


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _options(out, *extra):
    return ["--config", TINY, "--run_mode", "train", "--output_dir", str(out), "--options",
            f"runner_config.stop_step={STEPS}", "callbacks.1.save_checkpoint_steps=" + str(SAVE_AT),
            "callbacks.0.per_print_times=5", *extra]


def _start(cmd):
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run(cmd, out, timeout=400, process=None):
    process = process or _start(cmd)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
    result = subprocess.CompletedProcess(cmd, process.returncode, stdout, stderr)
    logs = "".join(p.read_text() for p in sorted((out / "msrun").glob("*.log"))) if (out / "msrun").exists() else ""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:] + logs[-4000:]


def _msrun(out, *extra):
    cmd = [sys.executable, "-m", "mindspore.parallel.cluster.run", "--worker_num=2", "--local_worker_num=2",
           f"--master_port={_free_port()}", f"--log_dir={out / 'msrun'}", "--join=True",
           os.path.join(REPO, "run_mindformer.py"),
           *_options(out, "use_parallel=True", "parallel_config.model_parallel=2", *extra)]
    _run(cmd, out)


def _losses(out):
    with open(out / "log" / "train_metrics.jsonl", encoding="utf-8") as f:
        return {r["step"]: (r["loss"], r["grad_norm"]) for r in map(json.loads, f)}


def test_mp2_trains_like_one_process_saves_whole_weights_and_resumes(tmp_path):
    single, tp, resumed = tmp_path / "single", tmp_path / "mp2", tmp_path / "resumed"
    one_process = [sys.executable, os.path.join(REPO, "run_mindformer.py"), *_options(single)]
    reference = _start(one_process)  # alongside the msrun job: each spends most of its first minute compiling
    try:
        _msrun(tp)
    finally:
        _run(one_process, single, process=reference)
    one, two = _losses(single), _losses(tp)
    assert sorted(one) == sorted(two) == list(range(1, STEPS + 1))
    gap = max(abs(one[s][0] - two[s][0]) for s in one)
    print(f"max |loss(mp=2) - loss(1 process)| over {STEPS} steps: {gap:.3g}")
    assert gap < 1e-5
    assert max(abs(one[s][1] - two[s][1]) / one[s][1] for s in one) < 1e-4  # the global norm is the whole model's

    # one whole checkpoint, same names and shapes as one process's, loads strictly into a one-process model
    from mindformers.checkpoint import load_weights, read_weights
    ckpt = tp / "checkpoint" / f"llama_tiny-step{STEPS}"
    assert not (tp / "checkpoint" / "rank_1").exists()
    whole, ref = read_weights(str(ckpt / "model.safetensors")), read_weights(str(single / "checkpoint" /
                                                                               f"llama_tiny-step{STEPS}" /
                                                                               "model.safetensors"))
    assert {k: v.shape for k, v in whole.items()} == {k: v.shape for k, v in ref.items()}
    weight_gap = max(float(np.abs(whole[k] - ref[k]).max()) for k in ref)
    print(f"max |weight(mp=2) - weight(1 process)| after {STEPS} steps: {weight_gap:.3g}")
    assert weight_gap < 1e-4
    net = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in _tiny_config().model.model_config.items()
                                          if k != "type"}))
    load_weights(net, str(ckpt))

    # resume under mp=2 from the step-10 checkpoint (whole weights and AdamW moments sliced at load): the same
    # steps 11 and 12 (the LR schedule spans the planned run whatever stop_step is; step 12 shows the moments)
    _msrun(resumed, f"load_checkpoint={tp / 'checkpoint' / f'llama_tiny-step{SAVE_AT}'}", "resume_training=True",
           f"runner_config.stop_step={SAVE_AT + 2}")
    again = _losses(resumed)
    assert sorted(again) == [SAVE_AT + 1, SAVE_AT + 2]
    resume_gap = max(abs(again[s][0] - two[s][0]) for s in again)
    print(f"max |loss(resumed) - loss(uninterrupted)|: {resume_gap:.3g}")
    assert resume_gap < 1e-6
