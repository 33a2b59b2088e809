"""Packed sequences: position ids that restart per document make the model treat each document as if alone, and
the trainer runs EOD-reset pretraining, packed finetuning and dynamic padding end to end."""
import os

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from mindformers.config import load_config
from mindformers.dataset import CommonDataLoader
from mindformers.dataset.indexed import reset_positions
from mindformers.dataset.common import pack_samples
from mindformers.dataset.instruct import IGNORE
from mindformers.models import LlamaConfig, LlamaForCausalLM, MixtralConfig, MixtralForCausalLM
from mindformers.models.decoder import packed_positions_and_mask
from mindformers.tokenization import LlamaTokenizer
from mindformers.trainer.causal_lm import CausalLanguageModelingTrainer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = dict(seq_length=16, hidden_size=32, num_layers=2, num_heads=4, n_kv_heads=2, vocab_size=64,
            intermediate_size=48, initializer_range=0.2)

pytestmark = pytest.mark.usefixtures("graph_mode")


@pytest.mark.parametrize("family", ["llama", "mixtral"])
def test_packed_documents_do_not_see_each_other(family):
    ms.set_seed(0)
    net = LlamaForCausalLM(LlamaConfig(**TINY)) if family == "llama" else \
        MixtralForCausalLM(MixtralConfig(**TINY, num_experts=4, num_experts_per_tok=2))
    rng = np.random.default_rng(0)
    a, b = rng.integers(3, 64, 6), rng.integers(3, 64, 10)
    packed = np.concatenate([a, b]).astype(np.int32)[None]
    positions = np.concatenate([np.arange(6), np.arange(10)]).astype(np.int32)[None]
    pos, mask = packed_positions_and_mask(Tensor(positions))
    together = net.forward_positions(Tensor(packed), pos, mask).asnumpy()[0]
    alone_a = net(Tensor(a[None].astype(np.int32))).asnumpy()[0]
    alone_b = net(Tensor(b[None].astype(np.int32))).asnumpy()[0]
    np.testing.assert_allclose(together[:6], alone_a, atol=1e-5)
    np.testing.assert_allclose(together[6:], alone_b, atol=1e-5)


def test_training_loss_with_position_ids_is_the_per_document_loss():
    ms.set_seed(1)
    net = LlamaForCausalLM(LlamaConfig(**TINY))
    rng = np.random.default_rng(1)
    eod = 2
    a = np.append(rng.integers(3, 64, 7), eod)
    b = rng.integers(3, 64, 9)  # 8 + 9 = 17 = seq_length + 1 tokens
    row = np.concatenate([a, b]).astype(np.int32)[None]
    net.set_train(True)
    packed = float(net(Tensor(row), Tensor(row), Tensor(reset_positions(row[0], eod)[None])).asnumpy())
    net.set_train(False)
    logits = np.concatenate([net(Tensor(a[None].astype(np.int32))).asnumpy()[0],
                             net(Tensor(b[None, :-1].astype(np.int32))).asnumpy()[0]])
    targets = row[0, 1:]
    logp = logits - logits.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    # the EOD position predicts b[0] from document a alone (Megatron keeps that loss)
    expected = -np.mean(logp[np.arange(16), targets])
    assert abs(packed - expected) < 1e-5


def test_eval_scores_labels_and_packed_positions_as_training_does():
    """score_dataset (eval, eval during training) takes targets from a labels column and per-document
    positions from a position_ids column, so a packed finetune set scores each sample alone, answers only."""
    import mindspore.dataset as ds
    from mindformers.evaluation.scoring import score_dataset
    ms.set_seed(2)
    net = LlamaForCausalLM(LlamaConfig(**TINY))
    rng = np.random.default_rng(2)
    a, b = rng.integers(3, 64, 8), rng.integers(3, 64, 9)
    ids = np.concatenate([a, b]).astype(np.int32)[None]
    labels = ids.copy()
    labels[0, :4] = IGNORE  # a's prompt
    labels[0, 8:11] = IGNORE  # b's prompt
    positions = np.concatenate([np.arange(8), np.arange(9)]).astype(np.int32)[None]

    def logp_of(doc):
        logits = net(Tensor(doc[None, :-1].astype(np.int32))).asnumpy()[0]
        logits = logits - logits.max(-1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    # targets: a[1:] and b[1:] where labelled; a's last token would predict b[0], which is b's prompt (ignored)
    picked = [logp_of(a)[t - 1, a[t]] for t in range(4, 8)] + [logp_of(b)[t - 1, b[t]] for t in range(3, 9)]
    expected = -np.mean(picked)
    result = score_dataset(net, ds.NumpySlicesDataset({"input_ids": ids, "labels": labels,
                                                       "position_ids": positions}, shuffle=False).batch(1))
    assert result["tokens"] == len(picked) == int((labels[0, 1:] != IGNORE).sum())
    assert abs(result["loss"] - expected) < 1e-5
    unlabelled = score_dataset(net, ds.NumpySlicesDataset({"input_ids": ids}, shuffle=False).batch(1))
    assert unlabelled["tokens"] == 16  # every next token, one attention span


def test_pack_samples_layout():
    samples = []
    for n_prompt, n_resp in ((3, 2), (2, 4), (4, 4)):
        ids = np.zeros(12, np.int32)
        labels = np.full(12, IGNORE, np.int32)
        ids[:n_prompt + n_resp] = np.arange(1, n_prompt + n_resp + 1)
        labels[n_prompt:n_prompt + n_resp] = ids[n_prompt:n_prompt + n_resp]
        samples.append((ids, labels))
    rows = pack_samples(samples, 12, pad_id=0)
    assert len(rows) == 2  # 5 + 6 fit in 12; 8 does not fit beside them
    ids, labels, pos = rows[0]
    assert pos.tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 0]
    assert labels.tolist() == [IGNORE] * 3 + [4, 5] + [IGNORE] * 2 + [3, 4, 5, 6] + [IGNORE]
    assert rows[1][2].tolist() == list(range(8)) + [0, 1, 2, 3]


SIZES = {"seq_length": 128, "hidden_size": 32, "num_layers": 2, "num_heads": 4, "n_kv_heads": 2,
         "intermediate_size": 64, "vocab_size": 2048}


def _alpaca_config(tmp_path, **overrides):
    sizes = SIZES
    return load_config(os.path.join(ROOT, "configs/llama/finetune_llama_tiny_alpaca.yaml"),
                       {"output_dir": str(tmp_path), "load_checkpoint": "", "runner_config.stop_step": 6,
                        "lr_schedule.warmup_steps": 1, "runner_config.batch_size": 4,
                        **{f"model.model_config.{k}": v for k, v in sizes.items()}, **overrides})


@pytest.mark.slow
def test_finetune_with_packing_and_with_dynamic_padding(tmp_path):
    tok = LlamaTokenizer(vocab_file="mindformers/assets/tiny_corpus/tokenizer.model")
    plain = CommonDataLoader("mindformers/assets/tiny_instruct/alpaca.json",
                             [{"type": "AlpacaInstructDataHandler"}], tok, seq_length=256)
    packed = CommonDataLoader("mindformers/assets/tiny_instruct/alpaca.json",
                              [{"type": "AlpacaInstructDataHandler"}], tok, seq_length=256, packing="pad")
    assert len(packed) < len(plain) / 2
    assert sum(int((s[1] != IGNORE).sum()) for s in packed.samples) == plain.response_tokens

    history = CausalLanguageModelingTrainer().train(_alpaca_config(
        tmp_path / "packed", **{"train_dataset.data_loader.packing": "pad",
                                "train_dataset.input_columns": ["input_ids", "labels", "position_ids"]}),
        network=LlamaForCausalLM(LlamaConfig(**SIZES)), is_finetune=True)
    assert len(history) == 6 and all(np.isfinite(r["loss"]) for r in history)
    history = CausalLanguageModelingTrainer().train(_alpaca_config(
        tmp_path / "dynamic", **{"train_dataset.dynamic_batch": True, "train_dataset.divisor": 32}),
        network=LlamaForCausalLM(LlamaConfig(**SIZES)), is_finetune=True)
    assert len(history) == 6 and all(np.isfinite(r["loss"]) for r in history)


@pytest.mark.slow
def test_pretrain_with_eod_reset_from_an_indexed_dataset(tmp_path):
    from mindformers.tools.preprocess_data import main as preprocess
    prefix = str(tmp_path / "corpus")
    assert preprocess(["--input", "mindformers/assets/tiny_corpus/corpus.txt", "--output-prefix", prefix,
                       "--config", "configs/llama/pretrain_llama_tiny.yaml", "--workers", "1", "--quiet"]) == 0
    config = load_config(os.path.join(ROOT, "configs/llama/pretrain_llama_tiny.yaml"), {
        "output_dir": str(tmp_path / "out"), "runner_config.stop_step": 20, "lr_schedule.warmup_steps": 2,
        "train_dataset.data_loader": {"type": "IndexedDataLoader", "data_path": prefix, "shuffle": True},
        # before train_dataset_task followed train_dataset, these two overrides never reached the data
        "train_dataset.eod_reset": True, "train_dataset.input_columns": ["input_ids", "labels", "position_ids"],
        "model.model_config.num_layers": 1})
    history = CausalLanguageModelingTrainer().train(config)
    first, last = np.mean([r["loss"] for r in history[:3]]), np.mean([r["loss"] for r in history[-3:]])
    assert len(history) == 20 and last < first - 0.5
