"""Indexed (.bin/.idx) and MindRecord datasets, the preprocessing CLI that makes them, and blended loaders."""
import json
import os
import struct

import numpy as np
import pytest

from mindformers.dataset import BlendedDataLoader, CausalLanguageModelDataset, IndexedDataLoader, \
    IndexedDataset, IndexedDatasetWriter, MindDataset, TextDataLoader
from mindformers.dataset.indexed import reset_positions
from mindformers.tools.preprocess_data import main as preprocess

CORPUS = "mindformers/assets/tiny_corpus/corpus.txt"
CONFIG = "configs/llama/pretrain_llama_tiny.yaml"


def test_index_layout_is_megatrons(tmp_path):
    docs = [[1, 2, 3], [4], [5, 6]]
    with IndexedDatasetWriter(str(tmp_path / "d"), np.uint16) as writer:
        for d in docs:
            writer.add_document(d)
    raw = (tmp_path / "d.idx").read_bytes()
    # Parsed by hand from the documented layout, independently of IndexedDataset.
    assert raw[:9] == b"MMIDIDX\x00\x00"
    version, code, n_seq, n_doc = struct.unpack("<QBQQ", raw[9:34])
    assert (version, code, n_seq, n_doc) == (1, 8, 3, 4)
    lengths = np.frombuffer(raw, np.int32, 3, 34)
    pointers = np.frombuffer(raw, np.int64, 3, 34 + 12)
    starts = np.frombuffer(raw, np.int64, 4, 34 + 36)
    assert lengths.tolist() == [3, 1, 2] and pointers.tolist() == [0, 6, 8] and starts.tolist() == [0, 1, 2, 3]
    assert np.frombuffer((tmp_path / "d.bin").read_bytes(), np.uint16).tolist() == [1, 2, 3, 4, 5, 6]
    data = IndexedDataset(str(tmp_path / "d"))
    assert len(data) == 3 and [data[i].tolist() for i in range(3)] == docs


def test_bad_index_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.idx does not exist"):
        IndexedDataset(str(tmp_path / "missing"))
    (tmp_path / "x.idx").write_bytes(b"not an index at all, really not one")
    (tmp_path / "x.bin").write_bytes(b"")
    with pytest.raises(ValueError, match=r"x\.idx is not a Megatron MMIDIDX index"):
        IndexedDataset(str(tmp_path / "x"))
    with IndexedDatasetWriter(str(tmp_path / "y"), np.uint16) as writer:
        writer.add_document([1, 2, 3])
    (tmp_path / "y.bin").write_bytes(b"\x01\x00")
    with pytest.raises(ValueError, match=r"y\.bin has 2 bytes but .*y\.idx lists 3 tokens"):
        IndexedDataset(str(tmp_path / "y"))
    with pytest.raises(ValueError, match="does not fit uint16"):
        with IndexedDatasetWriter(str(tmp_path / "z"), np.uint16) as writer:
            writer.add_document([70000])
    assert not list(tmp_path.glob("z.*")), "a failed write leaves no files behind"


def test_cli_text_matches_the_text_loader(tmp_path, tok, capsys):
    prefix = str(tmp_path / "out" / "corpus")
    assert preprocess(["--input", CORPUS, "--output-prefix", prefix, "--config", CONFIG, "--workers", "2",
                       "--quiet"]) == 0
    assert "tokens/s" in capsys.readouterr().out
    indexed = IndexedDataLoader(prefix, seq_length=64)
    text = TextDataLoader(CORPUS, tok, 64)
    assert len(indexed) == len(text) > 100
    for i in (0, 1, len(text) // 2, len(text) - 1):
        np.testing.assert_array_equal(indexed[i][0], text[i][0])
    assert IndexedDataset(prefix)[0][-1] == tok.eos_token_id  # every document ends with EOD


def test_cli_jsonl_keys_bad_lines_and_skipping(tmp_path, tok, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"text": "hello world"}) + "\n{broken\n" + json.dumps({"body": "x"}) + "\n" +
                    json.dumps({"text": "second doc"}) + "\n", encoding="utf-8")
    args = ["--input", str(data), "--output-prefix", str(tmp_path / "j"), "--tokenizer",
            "mindformers/assets/tiny_corpus/tokenizer.model", "--workers", "1", "--quiet"]
    assert preprocess(args) == 2
    assert "d.jsonl:2:" in capsys.readouterr().err
    assert not (tmp_path / "j.bin").exists()
    assert preprocess(args + ["--skip-bad-lines"]) == 0
    out = capsys.readouterr().out
    assert "2 documents" in out and "2 lines skipped" in out
    data_set = IndexedDataset(str(tmp_path / "j"))
    assert data_set[1].tolist() == tok.encode("second doc") + [tok.eos_token_id]
    (tmp_path / "e.jsonl").write_text("", encoding="utf-8")
    assert preprocess(["--input", str(tmp_path / "e.jsonl")] + args[2:]) == 2
    assert "e.jsonl is empty" in capsys.readouterr().err


def test_cli_parquet_and_directory_input(tmp_path, tok):
    import pyarrow as pa  # in the test extra
    import pyarrow.parquet as pq
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(pa.table({"text": ["one doc", "two doc"], "id": [1, 2]}), src / "a.parquet")
    (src / "b.txt").write_text("three doc\n\nfour doc\n", encoding="utf-8")
    assert preprocess(["--input", str(src), "--output-prefix", str(tmp_path / "p"), "--config", CONFIG,
                       "--workers", "1", "--quiet"]) == 0
    data = IndexedDataset(str(tmp_path / "p"))
    assert [tok.decode(data[i].tolist(), skip_special_tokens=True) for i in range(4)] == \
        ["one doc", "two doc", "three doc", "four doc"]
    (src / "c.jsonl").write_text(json.dumps({"text": "five doc"}) + "\n", encoding="utf-8")
    assert preprocess(["--input", str(src), "--output-prefix", str(tmp_path / "q"), "--config", CONFIG,
                       "--workers", "1", "--quiet"]) == 0  # one chunk holding text and jsonl documents
    data = IndexedDataset(str(tmp_path / "q"))
    assert [tok.decode(data[i].tolist(), skip_special_tokens=True) for i in range(5)] == \
        ["one doc", "two doc", "three doc", "four doc", "five doc"]


def test_cli_mindrecord_and_mind_dataset(tmp_path, tok):
    prefix = str(tmp_path / "mr")
    assert preprocess(["--input", CORPUS, "--output-prefix", prefix, "--config", CONFIG, "--format", "mindrecord",
                       "--seq-length", "64", "--workers", "1", "--quiet"]) == 0
    records = MindDataset(dataset_dir=prefix + ".mindrecord", seq_length=64)
    text = TextDataLoader(CORPUS, tok, 64)
    assert len(records) == len(text)
    np.testing.assert_array_equal(records[5][0], text[5][0])
    with pytest.raises(ValueError, match=r"record 0 has 65 input_ids; seq_length 32 needs 33"):
        MindDataset(dataset_dir=prefix + ".mindrecord", seq_length=32)
    # upstream YAML shape: data_loader {type: MindDataset, dataset_dir} under CausalLanguageModelDataset
    ds = CausalLanguageModelDataset({"data_loader": {"type": "MindDataset", "dataset_dir": str(tmp_path),
                                                     "shuffle": True}, "batch_size": 4},
                                    tokenizer=tok, seq_length=64, seed=3)
    batch = next(ds.create_tuple_iterator(output_numpy=True))[0]
    assert batch.shape == (4, 65)


def test_blended_loader_mixes_by_weight_deterministically(tmp_path):
    for name, value in (("a", 1), ("b", 2)):
        with IndexedDatasetWriter(str(tmp_path / name), np.uint16) as writer:
            writer.add_document([value] * 9 * (30 if name == "a" else 10))  # 30 and 10 samples of 9 tokens
    spec = [{"weight": 3, "type": "IndexedDataLoader", "data_path": str(tmp_path / "a"), "shuffle": True},
            {"weight": 1, "type": "IndexedDataLoader", "data_path": str(tmp_path / "b")}]
    blend = BlendedDataLoader(spec, seq_length=8, seed=1)
    assert len(blend) == 40 and blend.counts.tolist() == [30, 10]
    order = blend.epoch_order(0)
    sources = [int(blend[i][0][0]) for i in order]
    assert sources.count(1) == 30 and sources.count(2) == 10
    assert all(sources[i:i + 4].count(2) == 1 for i in range(0, 40, 4)), "spread evenly, not in runs"
    again = BlendedDataLoader(spec, seq_length=8, seed=1)
    assert again.epoch_order(0).tolist() == order.tolist() and again.epoch_order(1).tolist() != order.tolist()
    bigger = BlendedDataLoader(spec, size=80, seq_length=8)  # b wraps around into its next epoch
    assert sorted(bigger.epoch_order(0)[bigger.schedule == 1] - bigger.offsets[1]) == sorted(list(range(10)) * 2)
    with pytest.raises(ValueError, match=r"sources\[1\]\.weight must be a positive number"):
        BlendedDataLoader([spec[0], {**spec[1], "weight": 0}], seq_length=8)


def test_reset_positions_restart_after_each_eod():
    ids = np.array([5, 6, 2, 7, 8, 9, 2, 4], np.int32)
    assert reset_positions(ids, 2).tolist() == [0, 1, 2, 0, 1, 2, 3, 0]


def test_eod_reset_columns(tmp_path, tok, write_docs):
    path = write_docs("c.txt", ["alpha beta gamma", "delta epsilon", "zeta eta theta iota"] * 10)
    ds = CausalLanguageModelDataset({"data_loader": {"type": "TextDataLoader", "dataset_dir": str(path)},
                                     "batch_size": 2, "eod_reset": True}, tokenizer=tok, seq_length=16)
    assert ds.get_col_names() == ["input_ids", "labels", "position_ids"]
    ids, labels, pos = next(ds.create_tuple_iterator(output_numpy=True))
    np.testing.assert_array_equal(ids, labels)
    for row_ids, row_pos in zip(ids, pos):
        np.testing.assert_array_equal(row_pos, reset_positions(row_ids, tok.eos_token_id))
    with pytest.raises(ValueError, match="eod_reset: True gives the columns"):
        CausalLanguageModelDataset({"data_loader": {"type": "TextDataLoader", "dataset_dir": str(path)},
                                    "input_columns": ["input_ids"], "eod_reset": True}, tokenizer=tok, seq_length=16)


def test_data_from_another_vocabulary_is_refused(tmp_path, tok):
    with IndexedDatasetWriter(str(tmp_path / "v"), np.uint16) as writer:
        writer.add_document(list(range(100, 300)))
    spec = {"data_loader": {"type": "IndexedDataLoader", "data_path": str(tmp_path / "v")}, "batch_size": 2}
    with pytest.raises(ValueError, match=r"holds token id 299 but model_config.vocab_size is 256"):
        CausalLanguageModelDataset(spec, seq_length=16, vocab_size=256)
    assert CausalLanguageModelDataset(spec, seq_length=16, vocab_size=300).get_dataset_size() == 5

    from mindformers.models import LlamaConfig, LlamaForCausalLM
    from mindformers.trainer.builders import check_vocab as _check_vocab
    small = LlamaForCausalLM(LlamaConfig(seq_length=8, hidden_size=16, num_layers=1, num_heads=2, vocab_size=64,
                                         intermediate_size=32))
    with pytest.raises(ValueError, match=r"processor.tokenizer has 2048 ids but model_config.vocab_size is 64"):
        _check_vocab(tok, small)


def test_cli_worker_threads_and_processes_write_the_same_files(tmp_path, monkeypatch, capsys):
    """A `tokenizers` tokenizer is run by threads, others by forked processes; chunking and the kind of
    worker must not change a byte of the output, and errors still name the line."""
    from mindformers.tokenization.hf_tokenizer import PreTrainedTokenizerFast
    with open(CORPUS, encoding="utf-8") as f:
        docs = [d for d in f.read().split("\n\n") if d.strip()][:300]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs) + "1, 2\n", encoding="utf-8")
    base = ["--input", str(data), "--tokenizer", "tests/fixtures/hf_tiny_bpe_tokenizer", "--chunk-size", "16",
            "--quiet", "--skip-bad-lines"]
    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    outputs = {}
    for name, workers, threads in (("one", "1", True), ("threads", "2", True), ("procs", "2", False)):
        monkeypatch.setattr(PreTrainedTokenizerFast, "batch_encode_releases_gil", threads)
        assert preprocess(base + ["--output-prefix", str(tmp_path / name), "--workers", workers]) == 0
        out = capsys.readouterr().out
        assert f"{len(docs)} documents" in out and "1 lines skipped" in out
        outputs[name] = [(tmp_path / f"{name}.{ext}").read_bytes() for ext in ("bin", "idx")]
    assert outputs["one"] == outputs["threads"] == outputs["procs"]
    assert "TOKENIZERS_PARALLELISM" not in os.environ, "the threads' setting is undone"
    monkeypatch.setattr(PreTrainedTokenizerFast, "batch_encode_releases_gil", True)
    assert preprocess(base[:-1] + ["--output-prefix", str(tmp_path / "bad"), "--workers", "2"]) == 2
    assert f"d.jsonl:{len(docs) + 1}: Extra data" in capsys.readouterr().err
