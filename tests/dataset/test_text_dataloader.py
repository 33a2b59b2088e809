"""TextDataLoader: documents -> tokens -> fixed-length samples, cached."""
import os

import numpy as np
import pytest

from mindformers.dataset import TextDataLoader, split_documents
from mindformers.tools.register import MindFormerModuleType, build_from_config

DOCS = ["Return the value of the file object.", "A second document\nwith two lines.",
        "Third: the quick brown fox jumps over the lazy dog 12345 times."]


def expected_stream(tok, docs):
    return [i for doc in docs for i in tok.encode(doc) + [tok.eos_token_id]]


def test_split_documents():
    text = "a\nb\n\n\nc\n  \n\t\nd e\n"
    assert split_documents(text) == ["a\nb", "c", "d e"]
    assert split_documents("\n \n") == []


def test_samples_shape_count_and_eos_between_documents(tok, write_docs):
    path = write_docs("corpus.txt", DOCS)
    stream = expected_stream(tok, DOCS)
    seq_length = 7
    loader = TextDataLoader(str(path), tok, seq_length)
    assert len(loader) == len(stream) // (seq_length + 1) and loader.num_tokens == len(stream)
    (sample,) = loader[0]
    assert sample.shape == (seq_length + 1,) and sample.dtype == np.int32
    flat = np.concatenate([loader[i][0] for i in range(len(loader))])
    assert flat.tolist() == stream[:len(flat)]
    # Each document starts with bos (the tokenizer adds it) right after the previous one's eos.
    bos_at = [i for i, t in enumerate(stream) if t == tok.bos_token_id]
    assert all(stream[i - 1] == tok.eos_token_id for i in bos_at[1:])
    assert stream.count(tok.eos_token_id) == len(DOCS)


def test_add_eos_false_and_directory_in_sorted_order(tok, write_docs):
    write_docs("data/b.txt", DOCS[1:])
    write_docs("data/a.txt", DOCS[:1])
    write_docs("data/skip.md", ["not matched by the pattern " * 10])
    data_dir = os.path.dirname(write_docs("data/c.txt", ["c"]))
    loader = TextDataLoader(data_dir, tok, 3, add_eos=False)
    stream = [i for doc in DOCS + ["c"] for i in tok.encode(doc)]
    flat = loader.samples.reshape(-1).tolist()
    assert flat == stream[:len(flat)]


def test_registry_build_with_tokenizer_config_and_relative_path(tmp_path, monkeypatch, tok):
    monkeypatch.chdir(tmp_path)     # relative paths fall back to the repo root
    loader = build_from_config(
        {"type": "TextDataLoader", "dataset_dir": "mindformers/assets/tiny_corpus/eval.txt",
         "tokenizer": {"type": "LlamaTokenizer", "vocab_file": "mindformers/assets/tiny_corpus/tokenizer.model"}},
        MindFormerModuleType.DATASET_LOADER, seq_length=32)
    assert len(loader) > 100 and loader.samples.shape[1] == 33


def test_shuffled_epoch_order_is_seeded(tok, write_docs):
    path = str(write_docs("corpus.txt", DOCS * 20))
    plain = TextDataLoader(path, tok, 4)
    assert plain.epoch_order(3).tolist() == list(range(len(plain)))
    a, b = TextDataLoader(path, tok, 4, shuffle=True, seed=7), TextDataLoader(path, tok, 4, shuffle=True, seed=7)
    assert a.epoch_order(0).tolist() == b.epoch_order(0).tolist()
    assert sorted(a.epoch_order(0).tolist()) == list(range(len(a)))
    assert a.epoch_order(0).tolist() != a.epoch_order(1).tolist()
    assert a.epoch_order(0).tolist() != TextDataLoader(path, tok, 4, shuffle=True, seed=8).epoch_order(0).tolist()


def test_cache_is_reused_and_corrupt_cache_rebuilt(tok, write_docs, private_cache, monkeypatch):
    path = str(write_docs("corpus.txt", DOCS))
    first = TextDataLoader(path, tok, 5)
    files = list((private_cache / "text_tokens").glob("*.npy"))
    assert len(files) == 1
    # A second build reads the cache (tokenizing again would fail here), whatever the seq_length.
    with monkeypatch.context() as m:
        m.setattr(type(tok), "encode_batch", lambda *a, **k: pytest.fail("tokenized despite a cache"))
        again = TextDataLoader(path, tok, 3)
    assert again.num_tokens == first.num_tokens
    files[0].write_bytes(b"\x93NUMPY garbage")
    rebuilt = TextDataLoader(path, tok, 5)
    assert np.array_equal(rebuilt.samples, first.samples)
    assert np.load(files[0]).size == first.num_tokens
    # Different text or tokenizer settings get their own entry.
    write_docs("corpus.txt", DOCS[::-1])
    TextDataLoader(path, tok, 5)
    TextDataLoader(path, tok, 5, add_eos=False)
    assert len(list((private_cache / "text_tokens").glob("*.npy"))) == 3


def test_errors(tok, write_docs, tmp_path):
    with pytest.raises(FileNotFoundError, match="no/such.txt"):
        TextDataLoader("no/such.txt", tok, 8)
    empty = write_docs("empty.txt", ["  ", ""])
    with pytest.raises(ValueError, match=f"{empty} is empty"):
        TextDataLoader(str(empty), tok, 8)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(FileNotFoundError, match="no files matching"):
        TextDataLoader(str(tmp_path / "nothing"), tok, 8)
    short = write_docs("short.txt", ["the file"])
    n = len(tok.encode("the file")) + 1
    with pytest.raises(ValueError, match=f"has {n} tokens, but one sample \\(seq_length \\+ 1\\) needs 65"):
        TextDataLoader(str(short), tok, 64)
    with pytest.raises(ValueError, match="needs a tokenizer"):
        TextDataLoader(str(short), None, 64)
    with pytest.raises(ValueError, match="seq_length"):
        TextDataLoader(str(short), tok, None)
