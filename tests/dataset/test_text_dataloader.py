"""TextDataLoader: documents -> tokens -> fixed-length samples, cached."""
import json
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


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_jsonl_trains_on_the_text_field_not_the_json_line(tok, tmp_path):
    rows = [{"id": i, "text": doc, "meta": {"source": "x"}} for i, doc in enumerate(DOCS)]
    path = write_jsonl(tmp_path / "corpus.jsonl", rows[:2] + [""] + rows[2:])   # a blank line is skipped
    loader = TextDataLoader(str(path), tok, 7)
    flat = loader.samples.reshape(-1).tolist()
    stream = expected_stream(tok, DOCS)
    assert loader.num_tokens == len(stream) and flat == stream[:len(flat)]
    text = tok.decode(flat)
    assert '{"text":' not in text and '"id"' not in text and DOCS[0] in text
    # a .json file of JSON lines reads the same way; the U+2028 inside a string does not split the line
    odd = write_jsonl(tmp_path / "odd.json", [json.dumps({"text": "line\u2028separator"}, ensure_ascii=False)])
    assert TextDataLoader(str(odd), tok, 2, add_eos=False).num_tokens == len(tok.encode("line\u2028separator"))


def test_json_keys_each_key_is_a_document_and_part_of_the_cache_key(tok, tmp_path, private_cache):
    rows = [{"title": f"Title {i}", "text": doc} for i, doc in enumerate(DOCS)]
    path = str(write_jsonl(tmp_path / "corpus.jsonl", rows))
    both = TextDataLoader(path, tok, 5, json_keys=["title", "text"])
    expected = expected_stream(tok, [d for r in rows for d in (r["title"], r["text"])])
    assert both.num_tokens == len(expected)
    assert both.samples.reshape(-1).tolist() == expected[:both.samples.size]
    titles = TextDataLoader(path, tok, 2, json_keys=["title"])   # same file, other keys: not the cached tokens
    assert titles.num_tokens == len(expected_stream(tok, [r["title"] for r in rows]))
    assert len(list((private_cache / "text_tokens").glob("*.npy"))) == 2


@pytest.mark.parametrize("line, message", [
    ('{"text": "ok"', r"c.jsonl:2: not valid JSON"),
    ('["text", "a list"]', r"c.jsonl:2: a JSON list, not an object with the json_keys \['text'\]"),
    ('{"body": "b", "id": 3}', r"json_keys: .*c.jsonl:2 has no key 'text' \(its keys: 'body', 'id'\)"),
    ('{"text": 12}', r"json_keys: .*c.jsonl:2 key 'text' holds a int, not a string"),
])
def test_bad_json_line_names_file_line_and_key(tok, tmp_path, line, message):
    path = write_jsonl(tmp_path / "c.jsonl", [{"text": DOCS[0]}, line])
    with pytest.raises(ValueError, match=message):
        TextDataLoader(str(path), tok, 4)


def test_file_pattern_takes_jsonl_and_lists_of_globs(tok, write_docs, tmp_path):
    data = tmp_path / "data"
    write_docs("data/a.txt", DOCS[:1])
    write_jsonl(data / "b.jsonl", [{"text": d} for d in DOCS[1:]])
    assert TextDataLoader(str(data), tok, 3).files == [str(data / "a.txt")]   # default '*.txt' as before
    assert TextDataLoader(str(data), tok, 3, file_pattern="*.jsonl").files == [str(data / "b.jsonl")]
    mixed = TextDataLoader(str(data), tok, 3, file_pattern=["*.txt", "*.jsonl"])
    assert mixed.num_tokens == len(expected_stream(tok, DOCS))
    only_json = tmp_path / "j"
    write_jsonl(only_json.mkdir() or only_json / "x.jsonl", [{"text": DOCS[0]}])
    with pytest.raises(FileNotFoundError, match=r"no files matching '\*.txt' \(it has .jsonl files: set "
                                                r"file_pattern, e.g. '\*.jsonl'\)"):
        TextDataLoader(str(only_json), tok, 3)
    with pytest.raises(ValueError, match="file_pattern: a glob"):
        TextDataLoader(str(data), tok, 3, file_pattern=[])
    with pytest.raises(ValueError, match="json_keys: applies to .jsonl/.json files"):
        TextDataLoader(str(data), tok, 3, json_keys=["text"])
    with pytest.raises(ValueError, match="json_keys: a list of JSON field names"):
        TextDataLoader(str(data), tok, 3, file_pattern="*.jsonl", json_keys=[])
