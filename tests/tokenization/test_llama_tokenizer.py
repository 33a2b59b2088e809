"""LlamaTokenizer on the shipped tiny sentencepiece model."""
import copy
import os
import pickle

import numpy as np
import pytest

from mindformers.tokenization import LlamaTokenizer
from mindformers.tools.paths import REPO_ROOT
from mindformers.tools.register import MindFormerModuleType, build_from_config

VOCAB = "mindformers/assets/tiny_corpus/tokenizer.model"
EVAL_TXT = os.path.join(REPO_ROOT, "mindformers", "assets", "tiny_corpus", "eval.txt")


@pytest.fixture(scope="module")
def tok():
    return LlamaTokenizer(vocab_file=VOCAB)


def eval_lines(n=300):
    with open(EVAL_TXT, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()][:n]


def test_round_trip_on_corpus_lines(tok):
    lines = eval_lines()
    for line, ids in zip(lines, tok.encode_batch(lines)):
        assert ids[0] == tok.bos_token_id and tok.eos_token_id not in ids
        assert tok.decode(ids) == line
    assert tok.batch_decode(tok.encode_batch(lines[:5])) == lines[:5]


def test_round_trip_non_ascii_via_byte_fallback(tok):
    text = "naïve café — 日本語 ✓\n  indented\ttab 12345"
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.unk_token_id not in ids
    assert tok.decode(ids) == text
    assert "1" in tok.tokenize("12345") and "5" in tok.tokenize("12345")    # split_digits


def test_special_ids_and_vocab(tok):
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, 2, 0)
    assert tok.vocab_size == len(tok) == 2048
    assert tok.convert_ids_to_tokens([0, 1, 2, 3]) == ["<unk>", "<s>", "</s>", "<0x00>"]
    assert tok.convert_tokens_to_ids("<s>") == 1
    assert tok.convert_tokens_to_ids(["</s>", "no-such-piece"]) == [2, 0]
    assert tok.get_vocab()["<0xFF>"] == 258


def test_add_eos_and_special_strings_in_text():
    tok = LlamaTokenizer(vocab_file=VOCAB, add_bos_token=False, add_eos_token=True)
    ids = tok.encode("the file")
    assert ids[0] != 1 and ids[-1] == 2
    assert tok.encode("<s>the file</s>", add_special_tokens=False)[0] == 1
    assert tok.tokenize("<s>the</s>") == ["<s>", "▁the", "</s>"]
    # the word's "▁" is a space once text precedes it, as HF transformers decodes it
    assert tok.decode([1, *tok.encode("the file", add_special_tokens=False), 2], skip_special_tokens=False) \
        == "<s> the file</s>"
    assert tok.decode([1, *tok.encode("the file", add_special_tokens=False), 2]) == "the file"


def test_padding_both_sides(tok):
    texts = ["Return the value of the file object.", "the"]
    right = LlamaTokenizer(vocab_file=VOCAB, padding_side="right")
    longest = len(tok.encode(texts[0]))
    out_left = tok(texts, padding=True)
    out_right = right(texts, padding="longest")
    short = tok.encode(texts[1])
    pad = [0] * (longest - len(short))
    assert out_left["input_ids"][1] == pad + short
    assert out_left["attention_mask"][1] == [0] * len(pad) + [1] * len(short)
    assert out_right["input_ids"][1] == short + pad
    assert out_right["attention_mask"][1] == [1] * len(short) + [0] * len(pad)
    assert out_left["input_ids"][0] == out_right["input_ids"][0] == tok.encode(texts[0])

    arrays = tok(texts, padding="max_length", max_length=16, return_tensors="np")
    assert arrays["input_ids"].shape == arrays["attention_mask"].shape == (2, 16)
    assert arrays["input_ids"].dtype == np.int32
    assert int(arrays["attention_mask"][1].sum()) == len(short)


def test_truncation_both_sides_keeps_bos():
    text = "Return the value of the file object."
    for side in ("right", "left"):
        tok = LlamaTokenizer(vocab_file=VOCAB, truncation_side=side, add_eos_token=True)
        body = tok.encode(text, add_special_tokens=False)
        ids = tok(text, max_length=6, truncation=True)["input_ids"]
        kept = body[:4] if side == "right" else body[-4:]
        assert ids == [1, *kept, 2]
    tok = LlamaTokenizer(vocab_file=VOCAB, model_max_length=5)
    assert len(tok(text, truncation=True)["input_ids"]) == 5


def test_call_errors(tok):
    with pytest.raises(ValueError, match="max_length"):
        tok("x", padding="max_length")
    with pytest.raises(ValueError, match="padding=True"):
        tok(["a b c d", "a"], return_tensors="np")
    with pytest.raises(ValueError, match="padding must be"):
        tok("x", padding="both")
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([5, -100])
    with pytest.raises(ValueError, match="no pad_token"):
        LlamaTokenizer(vocab_file=VOCAB, pad_token=None)(["a", "a b"], padding=True)


def test_constructor_errors(tmp_path):
    with pytest.raises(ValueError, match="padding_side"):
        LlamaTokenizer(vocab_file=VOCAB, padding_side="middle")
    with pytest.raises(ValueError, match="pad_token '<pad>' is not in the vocabulary"):
        LlamaTokenizer(vocab_file=VOCAB, pad_token="<pad>")
    with pytest.raises(ValueError, match="legacy"):
        LlamaTokenizer(vocab_file=VOCAB, legacy=False)
    garbage = tmp_path / "tokenizer.model"
    garbage.write_bytes(b"not a model")
    with pytest.raises(ValueError, match=f"{garbage} is not a readable sentencepiece model"):
        LlamaTokenizer(vocab_file=str(garbage))


def test_missing_vocab_names_both_places(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        LlamaTokenizer(vocab_file="no/such/tokenizer.model")
    message = str(err.value)
    assert "\n" not in message and "no/such/tokenizer.model" in message
    assert str(tmp_path / "no/such/tokenizer.model") in message
    assert os.path.join(REPO_ROOT, "no/such/tokenizer.model") in message


def test_registry_build_from_another_directory(tmp_path, monkeypatch, tok):
    monkeypatch.chdir(tmp_path)
    built = build_from_config({"type": "LlamaTokenizer", "vocab_file": VOCAB, "add_eos_token": True},
                              MindFormerModuleType.TOKENIZER)
    assert built.encode("the file") == tok.encode("the file") + [2]
    assert built.fingerprint() != tok.fingerprint()


def test_pickle_and_deepcopy(tok):
    for clone in (pickle.loads(pickle.dumps(tok)), copy.deepcopy(tok)):
        assert clone.encode("the file object") == tok.encode("the file object")
        assert clone.fingerprint() == tok.fingerprint()


def test_clean_up_tokenization_spaces():
    tok = LlamaTokenizer(vocab_file=VOCAB, clean_up_tokenization_spaces=True)
    assert tok.decode(tok.encode("it is done . Is it ?")) == "it is done. Is it?"


def test_return_tensors_ms(tok):
    import mindspore
    out = tok(["the file", "the"], padding=True, return_tensors="ms")
    assert isinstance(out["input_ids"], mindspore.Tensor) and out["input_ids"].dtype == mindspore.int32
    assert out["input_ids"].shape == out["attention_mask"].shape == (2, len(tok.encode("the file")))
