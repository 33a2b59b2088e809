"""Tensor parallel in data-parallel mode (parallel/tensor_parallel.py): the slicing plan in one process, and a
2-worker msrun run (mp=2) that trains like one process, saves one whole checkpoint and resumes."""
import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from mindformers.config import ConfigError, MindFormerConfig, validate_config
from mindformers.models.llama import LlamaConfig, LlamaForCausalLM
from mindformers.parallel import MeshLayout
from mindformers.parallel.tensor_parallel import apply_tensor_parallel, data_parallel_rank
from mindformers.parallel.tensor_parallel_cells import (ColumnParallelLinear, RowParallelLinear, TensorParallel,
                                                        VocabParallelCrossEntropy, VocabParallelEmbedding,
                                                        VocabParallelHeadMatMul)

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
    # vocabulary parallel: the head's logits stay split in training (the loss is vocab-parallel), gathered else
    assert isinstance(net.lm_head, ColumnParallelLinear) and net.lm_head.gather is not None
    assert not net.lm_head.gather_in_training and isinstance(net.lm_loss, VocabParallelCrossEntropy)
    assert isinstance(net.model.embed_tokens, VocabParallelEmbedding)
    assert (attn.n_heads, attn.n_kv_heads, attn.n_rep) == (2, 1, 2)
    half = slice(rank * 16, (rank + 1) * 16)
    name = "model.layers.0.self_attn"
    np.testing.assert_array_equal(after[f"{name}.q_proj.weight"], before[f"{name}.q_proj.weight"][half])
    np.testing.assert_array_equal(after[f"{name}.q_proj.bias"], before[f"{name}.q_proj.bias"][half])
    np.testing.assert_array_equal(after[f"{name}.o_proj.weight"], before[f"{name}.o_proj.weight"][:, half])
    np.testing.assert_array_equal(after["model.layers.1.mlp.down_proj.weight"],
                                  before["model.layers.1.mlp.down_proj.weight"][:, rank * 24:(rank + 1) * 24])
    for vocab_split in ("lm_head.weight", "model.embed_tokens.weight"):
        np.testing.assert_array_equal(after[vocab_split], before[vocab_split][rank * 32:(rank + 1) * 32])
        assert tp.split[vocab_split] == 0
    for replicated in ("model.norm.weight", "model.layers.0.input_layernorm.weight"):
        np.testing.assert_array_equal(after[replicated], before[replicated])
        assert replicated not in tp.split
    assert tp.split[f"{name}.o_proj.weight"] == 1
    assert len(tp.split) == 2 * (3 + 3 + 1 + 3) + 2  # q/k/v weights, their biases, o, gate/up/down; head, embedding


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
def test_families_split_attention_dense_mlp_and_vocabulary_only(family):
    net = _family(family)
    before = full_weights(net)
    tp = apply_tensor_parallel(net, MeshLayout(dp=1, mp=2), 1, create_groups=False)
    attn = net.model.layers[0].self_attn
    assert (attn.n_heads, attn.n_kv_heads) == (2, 1)
    # Qwen3's head_dim 16 (not hidden / heads): q is 4 x 16 wide, so each rank holds 2 heads = 32 rows
    assert attn.q_proj.weight.shape[0] == attn.n_heads * attn.head_dim
    assert all(".experts." not in name and ".gate." not in name for name in tp.split)  # MoE stays whole
    assert "model.embed_tokens.weight" in tp.split and isinstance(net.lm_loss, VocabParallelCrossEntropy)
    for name, value in full_weights(net).items():
        if name not in tp.split:
            np.testing.assert_array_equal(value, before[name])  # norms (Qwen3's per-head q/k norms), router, experts


def test_tied_head_splits_with_the_embedding_and_bad_layouts_are_named():
    net = tiny_llama(tie_word_embeddings=True)
    table = full_weights(net)["model.embed_tokens.weight"]
    tp = apply_tensor_parallel(net, MeshLayout(dp=1, mp=2), 1, create_groups=False)
    # the tied head multiplies by the same (split) table: both hold this rank's 32 vocabulary rows
    assert "lm_head.weight" not in tp.split and tp.split["model.embed_tokens.weight"] == 0
    assert isinstance(net.head_matmul, VocabParallelHeadMatMul) and not net.head_matmul.gather_in_training
    np.testing.assert_array_equal(net.model.embed_tokens.weight.asnumpy(), table[32:])
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


def test_a_vocabulary_mp_does_not_divide_is_padded_and_checkpoints_stay_unpadded():
    full = full_weights(tiny_llama(vocab_size=63))
    ranks = []
    for rank in range(2):
        net = tiny_llama(vocab_size=63)
        tp = apply_tensor_parallel(net, MeshLayout(dp=1, mp=2), rank, create_groups=False)
        ranks.append((tp, tp.local_state(full), net))
    (_, local0, net0), (_, local1, net1) = ranks
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        assert local0[name].shape == local1[name].shape == (32, 32)
        np.testing.assert_array_equal(local1[name][:31], full[name][32:])
        assert not local1[name][31].any()  # the padding row: zeros, never looked up, never scored
        np.testing.assert_array_equal(sum(tp.padded(name, local[name]) for tp, local, _ in ranks), full[name])
    assert (net0.lm_loss.columns, net1.lm_loss.columns) == (32, 31)
    assert net1.model.embed_tokens.start == 32 and net1.lm_head.whole_out == 63
    with pytest.raises(ValueError, match=r"model_parallel \(2\) is too large for a vocabulary of 1"):
        apply_tensor_parallel(tiny_llama(vocab_size=1), MeshLayout(dp=1, mp=2), 0, create_groups=False)


def test_vocab_parallel_loss_equals_the_whole_cross_entropy_on_one_rank(pynative_mode):
    """mp=1 (the AllReduces are identities there): value and written-out backward against causal_lm_loss."""
    import mindspore as ms
    from mindspore import Tensor, nn

    from mindformers.models.base import CausalLMLoss

    class Same(nn.Cell):
        def construct(self, x):
            return x

    loss = VocabParallelCrossEntropy(TensorParallel(dp=1, mp=1, rank=0), 11, -100)
    loss.nll.all_reduce = loss.nll.grad_all_reduce = loss.nll.grad_all_reduce_max = Same()
    rng = np.random.default_rng(4)
    logits = Tensor((rng.normal(size=(2, 5, 11)) * 3).astype(np.float32))
    targets = rng.integers(0, 11, (2, 5)).astype(np.int32)
    targets[0, 1] = targets[1, 4] = -100
    targets = Tensor(targets)
    whole = CausalLMLoss(-100)
    np.testing.assert_allclose(loss(logits, targets).asnumpy(), whole(logits, targets).asnumpy(), rtol=1e-6)
    ours = ms.grad(loss)(logits, targets).asnumpy()
    np.testing.assert_allclose(ours, ms.grad(whole)(logits, targets).asnumpy(), atol=1e-6)
    assert np.abs(ours[0, 1]).max() == 0 and np.abs(ours[1, 4]).max() == 0


def test_data_shards_follow_the_data_parallel_rank():
    cfg = MindFormerConfig(use_parallel=True, parallel={"parallel_mode": 0},
                           parallel_config={"data_parallel": 2, "model_parallel": 2})
    assert [data_parallel_rank(cfg, r, 4) for r in range(4)] == [(0, 2), (0, 2), (1, 2), (1, 2)]
    cfg.use_parallel = False
    assert data_parallel_rank(cfg, 1, 2) == (1, 2)


def _tiny_config(*changes, **keyed) -> MindFormerConfig:
    from mindformers.config import load_config
    config = load_config(TINY, list(changes), validate=False)
    config.merge_from_dict(keyed)
    return config


def test_config_check_accepts_model_parallel_in_data_parallel_mode_only():
    validate_config(_tiny_config(**{"use_parallel": True, "parallel_config.model_parallel": 2}))
    with pytest.raises(ConfigError, match="'parallel_config.model_parallel: 2' is not supported on CPU"):
        validate_config(_tiny_config(**{"parallel_config.model_parallel": 2}))  # one process
    with pytest.raises(ConfigError, match="'parallel_config.pipeline_stage: 2' is not supported"):
        validate_config(_tiny_config(**{"use_parallel": True, "parallel_config.model_parallel": 2,
                                        "parallel_config.pipeline_stage": 2}))
    with pytest.raises(ConfigError, match="'optimizer.type: Adafactor' is not supported with parallel_config"):
        validate_config(_tiny_config(**{"use_parallel": True, "parallel_config.model_parallel": 2,
                                        "optimizer.type": "Adafactor"}))


# ---------------------------------------------------------------------------------------------- msrun, 2 workers
STEPS, SAVE_AT = 20, 10
# 2 layers and seq_length 32 keep compiling and the steps short; vocab 2049 makes mp=2 pad the vocabulary
SETTINGS = [f"runner_config.stop_step={STEPS}", f"callbacks.1.save_checkpoint_steps={SAVE_AT}",
            "callbacks.0.per_print_times=5", "model.model_config.num_layers=2", "model.model_config.seq_length=32",
            "model.model_config.vocab_size=2049"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _msrun(out, cache, *extra, env=None, workers=2):
    """Start an mp=2 run on `workers` workers (dp = workers / 2); runs given one cache share compiled graphs."""
    cmd = [sys.executable, "-m", "mindspore.parallel.cluster.run", f"--worker_num={workers}",
           f"--local_worker_num={workers}", f"--master_port={_free_port()}", f"--log_dir={out / 'msrun'}",
           "--join=True", os.path.join(REPO, "run_mindformer.py"), "--config", TINY, "--run_mode", "train",
           "--output_dir", str(out), "--options", *SETTINGS, "use_parallel=True", "parallel_config.model_parallel=2",
           f"parallel_config.data_parallel={workers // 2}", *extra]
    if cache is not None:
        cmd += ["context.enable_compile_cache=True", f"context.compile_cache_path={cache}"]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)  # its own process group: a failure stops every worker


def _worker_logs(out) -> str:
    return "".join(p.read_text() for p in sorted((out / "msrun").glob("*.log"))) if (out / "msrun").exists() else ""


def _wait(job, out, timeout=400):
    try:
        stdout, stderr = job.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        stdout, stderr = job.communicate()
    assert job.returncode == 0, stdout[-3000:] + stderr[-3000:] + _worker_logs(out)[-4000:]


def _losses(out):
    with open(out / "log" / "train_metrics.jsonl", encoding="utf-8") as f:
        return {r["step"]: (r["loss"], r["grad_norm"]) for r in map(json.loads, f)}


def test_mp2_trains_like_one_process_saves_whole_weights_and_resumes(tmp_path):
    from mindformers.trainer.causal_lm import CausalLanguageModelingTrainer
    single, tp, resumed, cache = tmp_path / "single", tmp_path / "mp2", tmp_path / "resumed", tmp_path / "cache"
    job = _msrun(tp, cache)
    try:  # the one-process reference in this process, alongside the workers (a process start and import fewer)
        CausalLanguageModelingTrainer().train(_tiny_config(f"output_dir={single}", *SETTINGS))
    except BaseException:
        os.killpg(job.pid, signal.SIGKILL)
        raise
    _wait(job, tp)
    one, two = _losses(single), _losses(tp)
    assert sorted(one) == sorted(two) == list(range(1, STEPS + 1))
    gap = max(abs(one[s][0] - two[s][0]) for s in one)
    print(f"max |loss(mp=2) - loss(1 process)| over {STEPS} steps: {gap:.3g}")
    assert gap < 1e-5
    assert max(abs(one[s][1] - two[s][1]) / one[s][1] for s in one) < 1e-4  # the global norm is the whole model's

    # one whole checkpoint (the padded vocabulary cut back to 2049 rows), the same names and shapes as one
    # process's, loads strictly into a one-process model
    from mindformers.checkpoint import load_weights, read_weights
    ckpt = tp / "checkpoint" / f"llama_tiny-step{STEPS}"
    assert not (tp / "checkpoint" / "rank_1").exists()
    whole = read_weights(str(ckpt / "model.safetensors"))
    ref = read_weights(str(single / "checkpoint" / f"llama_tiny-step{STEPS}" / "model.safetensors"))
    assert {k: v.shape for k, v in whole.items()} == {k: v.shape for k, v in ref.items()}
    assert whole["lm_head.weight"].shape[0] == whole["model.embed_tokens.weight"].shape[0] == 2049
    weight_gap = max(float(np.abs(whole[k] - ref[k]).max()) for k in ref)
    print(f"max |weight(mp=2) - weight(1 process)| after {STEPS} steps: {weight_gap:.3g}")
    assert weight_gap < 1e-4
    net = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in _tiny_config(*SETTINGS).model.model_config.items()
                                          if k != "type"}))
    load_weights(net, str(ckpt))

    # resume under mp=2 from the step-10 checkpoint (whole weights and AdamW moments sliced at load): the same
    # steps 11-20; the compile cache of the first run serves it (GLOG_v=2 logs the cache use)
    job = _msrun(resumed, cache, f"load_checkpoint={tp / 'checkpoint' / f'llama_tiny-step{SAVE_AT}'}",
                 "resume_training=True", env=dict(os.environ, GLOG_v="2"))
    _wait(job, resumed)
    again = _losses(resumed)
    assert sorted(again) == list(range(SAVE_AT + 1, STEPS + 1))
    resume_gap = max(abs(again[s][0] - two[s][0]) for s in again)
    print(f"max |loss(resumed) - loss(uninterrupted)|: {resume_gap:.3g}")
    assert resume_gap < 1e-6
    workers = sorted((resumed / "msrun").glob("worker_*.log"))
    assert len(workers) == 2 and all("Use the compilation cache" in p.read_text() for p in workers)


def test_dp2_mp2_with_a_tied_head_trains_like_one_process(tmp_path):
    """4 workers, dp 2 x mp 2, the head tied to the (padded, split) embedding: the same losses and weights as one
    process whose batch is both dp shards' (each step's dp shards together are the one-process step's batch)."""
    from mindformers.trainer.causal_lm import CausalLanguageModelingTrainer
    from mindformers.checkpoint import read_weights
    single, grid = tmp_path / "single", tmp_path / "dp2mp2"
    tied = "model.model_config.tie_word_embeddings=True"
    job = _msrun(grid, None, tied, workers=4)
    try:
        CausalLanguageModelingTrainer().train(_tiny_config(f"output_dir={single}", *SETTINGS, tied,
                                                           "runner_config.batch_size=16"))
    except BaseException:
        os.killpg(job.pid, signal.SIGKILL)
        raise
    _wait(job, grid, timeout=600)
    one, four = _losses(single), _losses(grid)
    assert sorted(one) == sorted(four) == list(range(1, STEPS + 1))
    gap = max(abs(one[s][0] - four[s][0]) for s in one)  # the loss reported is the mean over the dp ranks
    print(f"max |loss(dp2 x mp2, tied) - loss(1 process)| over {STEPS} steps: {gap:.3g}")
    assert gap < 1e-5
    assert max(abs(one[s][1] - four[s][1]) / one[s][1] for s in one) < 1e-4
    whole = read_weights(str(grid / "checkpoint" / f"llama_tiny-step{STEPS}" / "model.safetensors"))
    ref = read_weights(str(single / "checkpoint" / f"llama_tiny-step{STEPS}" / "model.safetensors"))
    assert {k: v.shape for k, v in whole.items()} == {k: v.shape for k, v in ref.items()}
    assert whole["model.embed_tokens.weight"].shape[0] == 2049
    weight_gap = max(float(np.abs(whole[k] - ref[k]).max()) for k in ref)
    print(f"max |weight(dp2 x mp2, tied) - weight(1 process)| after {STEPS} steps: {weight_gap:.3g}")
    assert weight_gap < 1e-4
