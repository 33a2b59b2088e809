"""DPO / IPO / SimPO losses on hand-computable cases, pairwise data, margins that grow, and a reward model."""
import math
import os

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from mindformers.alignment import PreferenceLoss, RewardModel, frozen_copy, preference_loss, sequence_logprobs
from mindformers.checkpoint import save_checkpoint
from mindformers.config import load_config
from mindformers.dataset import CommonDataLoader
from mindformers.models import LlamaConfig, LlamaForCausalLM
from mindformers.tokenization import LlamaTokenizer
from mindformers.trainer.causal_lm import CausalLanguageModelingTrainer
from mindformers.wrapper import MFTrainOneStepCell
from mindformers.core.optim import AdamW

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOKENIZER = os.path.join(ROOT, "mindformers", "assets", "tiny_corpus", "tokenizer.model")
PAIRS = os.path.join(ROOT, "mindformers", "assets", "tiny_instruct", "pairwise.jsonl")
SIZES = {"seq_length": 64, "hidden_size": 32, "num_layers": 2, "num_heads": 4, "n_kv_heads": 2,
         "intermediate_size": 64, "vocab_size": 2048}

pytestmark = pytest.mark.usefixtures("graph_mode")


def t(*values):
    return Tensor(np.array(values, np.float32))


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_losses_on_hand_computable_cases():
    # r_chosen = -1 - (-2) = 1, r_rejected = -3 - (-2.5) = -0.5: margin 1.5
    dpo = preference_loss("dpo", 0.1, t(-1.0), t(-3.0), t(-2.0), t(-2.5)).asnumpy()[0]
    assert math.isclose(dpo, -math.log(sigmoid(0.15)), rel_tol=1e-5)
    smooth = preference_loss("dpo", 0.1, t(-1.0), t(-3.0), t(-2.0), t(-2.5), label_smoothing=0.2).asnumpy()[0]
    assert math.isclose(smooth, -0.8 * math.log(sigmoid(0.15)) - 0.2 * math.log(sigmoid(-0.15)), rel_tol=1e-5)
    ipo = preference_loss("ipo", 0.5, t(-1.0), t(-3.0), t(-2.0), t(-2.5)).asnumpy()[0]
    assert math.isclose(ipo, (1.5 - 1.0) ** 2, rel_tol=1e-5)
    simpo = preference_loss("simpo", 2.0, t(-0.5), t(-1.25), gamma=0.5).asnumpy()[0]
    assert math.isclose(simpo, -math.log(sigmoid(2.0 * 0.75 - 0.5)), rel_tol=1e-5)
    with pytest.raises(ValueError, match="preference.loss_type 'kto' is not one of"):
        PreferenceLoss(LlamaForCausalLM(LlamaConfig(**SIZES)), None, "kto")


@pytest.fixture(scope="module")
def data():
    tok = LlamaTokenizer(vocab_file=TOKENIZER)
    loader = CommonDataLoader(PAIRS, [{"type": "PairwiseDataHandler"}], tokenizer=tok, seq_length=64)
    return tok, [tuple(Tensor(np.stack(col)) for col in zip(*[loader[i] for i in range(j, j + 8)]))
                 for j in range(0, 64, 8)]


def test_pairwise_rows_share_the_prompt_and_differ_in_the_answer(data):
    tok, batches = data
    chosen_ids, chosen_labels, rejected_ids, rejected_labels = (x.asnumpy()[0] for x in batches[0])
    prompt_len = int(np.argmax(chosen_labels != -100))
    assert (chosen_ids[:prompt_len] == rejected_ids[:prompt_len]).all()
    answer = tok.decode([int(v) for v in chosen_labels if v != -100])
    assert answer.strip() == "name file path" or answer  # the chosen answer, learned tokens only


def test_dpo_training_grows_the_margin(data):
    _, batches = data
    ms.set_seed(0)
    policy = LlamaForCausalLM(LlamaConfig(**SIZES, initializer_range=0.1))
    reference = frozen_copy(policy, lambda: LlamaForCausalLM(LlamaConfig(**SIZES)))
    assert all(p.name.startswith("reference.") and not p.requires_grad for p in reference.get_parameters())

    def margin():
        total = 0.0
        for c_ids, c_lab, r_ids, r_lab in batches:
            pc, _ = sequence_logprobs(policy, c_ids, c_lab)
            pr, _ = sequence_logprobs(policy, r_ids, r_lab)
            rc, _ = sequence_logprobs(reference, c_ids, c_lab)
            rr, _ = sequence_logprobs(reference, r_ids, r_lab)
            total += float(((pc - rc) - (pr - rr)).mean().asnumpy())
        return total / len(batches)

    assert abs(margin()) < 1e-4  # policy == reference at the start
    step = MFTrainOneStepCell(PreferenceLoss(policy, reference, "dpo", beta=0.5),
                              AdamW(policy.trainable_params(), learning_rate=3e-3))
    step.set_train(True)
    losses = [float(step(*batch)[0].asnumpy()) for _ in range(3) for batch in batches]
    assert math.isclose(losses[0], math.log(2), rel_tol=1e-4)  # zero margin: -log sigmoid(0)
    policy.set_train(False)
    assert margin() > 1.0 and np.mean(losses[-8:]) < losses[0] - 0.1


def test_reward_model_learns_to_rank(data):
    _, batches = data
    ms.set_seed(0)
    rm = RewardModel(LlamaForCausalLM(LlamaConfig(**SIZES)))
    assert "score.weight" in [p.name for p in rm.trainable_params()]

    def accuracy():
        right = []
        for c_ids, c_lab, r_ids, r_lab in batches:
            right += (rm.rewards(c_ids, c_lab) > rm.rewards(r_ids, r_lab)).asnumpy().tolist()
        return float(np.mean(right))

    before = accuracy()
    step = MFTrainOneStepCell(rm, AdamW(rm.trainable_params(), learning_rate=3e-3))
    step.set_train(True)
    for _ in range(6):
        for batch in batches:
            step(*batch)
    after = accuracy()
    assert after >= 0.75 and after > before + 0.2, (before, after)


@pytest.mark.parametrize("pref", [{"loss_type": "ipo", "beta": 0.5}, {"loss_type": "simpo", "beta": 2.0,
                                                                        "gamma": 0.5}])
def test_ipo_and_simpo_train_from_the_config(tmp_path, pref):
    ms.set_seed(0)
    save_checkpoint(str(tmp_path / "base"), "base", 1, LlamaForCausalLM(LlamaConfig(**SIZES)))
    config = load_config(os.path.join(ROOT, "configs/llama/dpo_llama_tiny.yaml"),
                         {"output_dir": str(tmp_path / "o"), "load_checkpoint": str(tmp_path / "base"),
                          "runner_config.stop_step": 8, "lr_schedule.warmup_steps": 1, "preference": pref,
                          "lr_schedule.learning_rate": 1e-3,
                          **{f"model.model_config.{k}": v for k, v in SIZES.items()}})
    history = CausalLanguageModelingTrainer().train(config, is_finetune=True)
    losses = [r["loss"] for r in history]
    if pref["loss_type"] == "ipo":  # zero margin at the start: (0 - 1/(2 beta))^2
        assert math.isclose(losses[0], 1.0, rel_tol=1e-4)
    assert len(losses) == 8 and all(np.isfinite(losses)) and min(losses) < losses[0]  # the policy moved


def test_dpo_config_runs_end_to_end(tmp_path):
    ms.set_seed(0)
    save_checkpoint(str(tmp_path / "base"), "base", 1, LlamaForCausalLM(LlamaConfig(**SIZES)))
    config = load_config(os.path.join(ROOT, "configs/llama/dpo_llama_tiny.yaml"),
                         {"output_dir": str(tmp_path / "dpo"), "load_checkpoint": str(tmp_path / "base"),
                          "runner_config.stop_step": 6, "lr_schedule.warmup_steps": 1,
                          **{f"model.model_config.{k}": v for k, v in SIZES.items()}})
    history = CausalLanguageModelingTrainer().train(config, is_finetune=True)
    assert len(history) == 6 and math.isclose(history[0]["loss"], math.log(2), rel_tol=1e-4)
    assert (tmp_path / "dpo" / "checkpoint").exists()
    with pytest.raises(ValueError, match="resume_training would rebuild the reference model"):
        config.resume_training = True
        CausalLanguageModelingTrainer().train(config, is_finetune=True)


def test_reward_model_config_trains_saves_and_reports_accuracy(tmp_path):
    ms.set_seed(0)
    save_checkpoint(str(tmp_path / "base"), "base", 1, LlamaForCausalLM(LlamaConfig(**SIZES)))
    overrides = {"output_dir": str(tmp_path / "rm"), "load_checkpoint": str(tmp_path / "base"),
                 "runner_config.stop_step": 4, "lr_schedule.warmup_steps": 1, "preference": {"loss_type": "reward"},
                 **{f"model.model_config.{k}": v for k, v in SIZES.items()}}
    config = load_config(os.path.join(ROOT, "configs/llama/dpo_llama_tiny.yaml"), overrides)
    history = CausalLanguageModelingTrainer().train(config, is_finetune=True)
    assert len(history) == 4 and math.isclose(history[0]["loss"], math.log(2), abs_tol=0.05)
    # eval: the saved reward model (score head included) ranks the pairs
    config = load_config(os.path.join(ROOT, "configs/llama/dpo_llama_tiny.yaml"), {
        **overrides, "load_checkpoint": str(tmp_path / "rm" / "checkpoint"),
        "metric": [{"type": "PairwiseAccuracyMetric", "data_path": PAIRS, "max_samples": 16}]})
    result = CausalLanguageModelingTrainer().evaluate(config)["pairwise_accuracy"]
    assert result["n"] == 16 and 0.0 <= result["score"] <= 1.0 and result["scored_by"] == "reward model"
