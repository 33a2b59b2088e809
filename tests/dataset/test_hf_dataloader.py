"""Upstream 2.x loaders: HFDataLoader (local files through HF datasets) and BlendedMegatronDatasetDataLoader."""
import importlib.util
import json
import sys

import numpy as np
import pytest
import yaml

from mindformers.dataset import AlpacaInstructDataHandler, CausalLanguageModelDataset, HFDataLoader
from mindformers.tools.preprocess_data import main as preprocess
from mindformers.tools.register import MindFormerModuleType, build_from_config

needs_datasets = pytest.mark.skipif(importlib.util.find_spec("datasets") is None,
                                    reason="HFDataLoader needs the optional `datasets` package (pip install datasets)")

SEQ = 128
ROWS = [{"instruction": f"reverse line {i}", "input": "red green" if i % 2 else "",
         "output": " ".join(["green red"] * (i % 3 + 1))} for i in range(12)]
# upstream's qwen3 finetune data_loader section, with the Hub id replaced by a local file
UPSTREAM = """
type: HFDataLoader
load_func: 'load_dataset'
path: "json"
data_files: DATA
split: "train"
create_attention_mask: False
create_compressed_eod_mask: False
compressed_eod_mask_length: 128
use_broadcast_data: True
shuffle: False
handler:
  - type: take
    n: 10
  - type: AlpacaInstructDataHandler
    seq_length: 128
    padding: False
    tokenizer:
      trust_remote_code: True
      padding_side: 'right'
  - type: PackingHandler
    seq_length: 128
    pack_strategy: 'pack'
"""


def write_rows(tmp_path, fmt: str) -> str:
    path = tmp_path / f"alpaca.{fmt}"
    if fmt == "json":
        path.write_text(json.dumps(ROWS), encoding="utf-8")
    elif fmt == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n", encoding="utf-8")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq
        pq.write_table(pa.Table.from_pylist(ROWS), str(path))
    return str(path)


def upstream_loader(files, tok, tmp_path, **changes):
    cfg = yaml.safe_load(UPSTREAM)
    cfg["data_files"] = files
    cfg.update(changes)
    return build_from_config(cfg, MindFormerModuleType.DATASET_LOADER, tokenizer=tok, seq_length=SEQ,
                             cache_dir=str(tmp_path / "hf_cache"))


def segments(ids, labels, positions):
    """(ids, labels) of each packed segment of a row: positions restart at 0 where a segment begins."""
    starts = list(np.flatnonzero(positions == 0)) + [len(ids)]
    return [(ids[a:b], labels[a:b]) for a, b in zip(starts[:-1], starts[1:])]


def real(sample):
    ids, labels = sample
    n = int(np.flatnonzero(labels != -100)[-1]) + 1
    return ids[:n], labels[:n]


@needs_datasets
@pytest.mark.parametrize("fmt", ["json", "jsonl", "parquet"])
def test_upstream_finetune_section_takes_encodes_and_packs(tmp_path, tok, fmt):
    loader = upstream_loader(write_rows(tmp_path, fmt), tok, tmp_path, path="parquet" if fmt == "parquet" else "json")
    encoder = AlpacaInstructDataHandler(tokenizer=tok, seq_length=SEQ)
    expected = [real(encoder.encode(row, "row")) for row in ROWS[:10]]   # take: n = 10
    assert loader.data_summary.startswith("10 examples read")
    assert loader.column_names == ["input_ids", "labels", "position_ids"]
    got = []
    for i in range(len(loader)):
        ids, labels, positions = loader[i]
        assert ids.shape == labels.shape == positions.shape == (SEQ + 1,) and ids.dtype == np.int32
        for seg_ids, seg_labels in segments(ids, labels, positions):
            if (seg_labels != -100).any():   # not the padding tail
                got.append((seg_ids, seg_labels))
            else:
                assert (seg_ids == (tok.pad_token_id or 0)).all()
    assert len(got) == 10 and len(loader) < 10, "samples are packed, in order, none lost"
    for (ids, labels), (want_ids, want_labels) in zip(got, expected):
        assert ids.tolist() == want_ids.tolist() and labels.tolist() == want_labels.tolist()
        assert labels[0] == -100 and labels[-1] == tok.eos_token_id   # prompt masked, response learned up to eos


@needs_datasets
def test_truncate_strategy_cuts_the_stream_into_rows(tmp_path, tok):
    path = write_rows(tmp_path, "jsonl")
    handler = [{"type": "AlpacaInstructDataHandler"}, {"type": "PackingHandler", "pack_strategy": "truncate"}]
    loader = HFDataLoader(path="json", data_files=path, handler=handler, tokenizer=tok, seq_length=SEQ,
                          cache_dir=str(tmp_path / "c"))
    encoder = AlpacaInstructDataHandler(tokenizer=tok, seq_length=SEQ)
    stream = np.concatenate([real(encoder.encode(r, "row"))[0] for r in ROWS])
    rows = [loader[i] for i in range(len(loader))]
    assert len(rows) == -(-len(stream) // (SEQ + 1))
    joined = np.concatenate([r[0] for r in rows])
    assert joined[:len(stream)].tolist() == stream.tolist()
    assert (joined[len(stream):] == (tok.pad_token_id or 0)).all()
    for ids, labels, positions in rows:
        assert positions[0] == 0
        for seg_ids, _ in segments(ids, labels, positions)[1:]:
            assert seg_ids[0] == tok.bos_token_id or (seg_ids == (tok.pad_token_id or 0)).all()


@needs_datasets
def test_unpacked_rows_shuffle_and_batches(tmp_path, tok):
    path = write_rows(tmp_path, "json")
    cfg = {"type": "HFDataLoader", "path": path, "shuffle": True, "cache_dir": str(tmp_path / "c"),
           "handler": [{"type": "shuffle", "seed": 3}, {"type": "AlpacaInstructDataHandler"}, {"type": "take", "n": 8}]}
    loader = build_from_config(cfg, MindFormerModuleType.DATASET_LOADER, tokenizer=tok, seq_length=SEQ, seed=5)
    assert len(loader) == 8 and loader.column_names == ["input_ids", "labels"]
    order = loader.epoch_order(0)
    assert sorted(order.tolist()) == list(range(8)) and order.tolist() != list(range(8))
    assert order.tolist() == loader.epoch_order(0).tolist() != loader.epoch_order(1).tolist()
    dataset = CausalLanguageModelDataset({"data_loader": cfg, "input_columns": ["input_ids", "labels"],
                                          "batch_size": 4}, tokenizer=tok, seq_length=SEQ, seed=5)
    batch = next(dataset.create_dict_iterator(num_epochs=1, output_numpy=True))
    assert batch["input_ids"].shape == batch["labels"].shape == (4, SEQ + 1)
    responses = {tuple(real(AlpacaInstructDataHandler(tokenizer=tok, seq_length=SEQ).encode(r, "r"))[1]) for r in ROWS}
    assert all(tuple(real((i, lab))[1]) in responses for i, lab in zip(batch["input_ids"], batch["labels"]))


@needs_datasets
def test_what_cannot_be_honoured_is_refused(tmp_path, tok, monkeypatch):
    path = write_rows(tmp_path, "json")
    with pytest.raises(ValueError, match=r"path 'llm-wizard/alpaca-gpt4-data-zh' is not a local file or directory: "
                                         r"Hugging Face Hub datasets are not available offline here; download it"):
        upstream_loader(path, tok, tmp_path, path="llm-wizard/alpaca-gpt4-data-zh", data_files=None)
    with pytest.raises(FileNotFoundError, match="data_files: 'nowhere.json' does not exist"):
        upstream_loader("nowhere.json", tok, tmp_path)
    with pytest.raises(ValueError, match=r"data_files '.*alpaca.parquet' is parquet but path is 'json'"):
        upstream_loader(write_rows(tmp_path, "parquet"), tok, tmp_path)
    (tmp_path / "broken.jsonl").write_text('{"instruction": "a", "output": "b"}\n{"instruction": \n')
    with pytest.raises(ValueError, match=r"could not read .*broken.jsonl as json \(split 'train'\): "):
        upstream_loader(str(tmp_path / "broken.jsonl"), tok, tmp_path)
    with pytest.raises(ValueError, match=r"could not read .*alpaca.json as json \(split 'validation'\): .*split"):
        upstream_loader(path, tok, tmp_path, split="validation")
    with pytest.raises(ValueError, match=r"input_columns: HFDataLoader does not serve 'loss_mask' \(labels carry it"):
        upstream_loader(path, tok, tmp_path, column_names=["input_ids", "labels", "loss_mask", "position_ids"])
    with pytest.raises(ValueError, match=r"input_columns \['input_ids', 'labels'\]: HFDataLoader needs "
                                         r"\['position_ids'\]"):
        upstream_loader(path, tok, tmp_path, column_names=["input_ids", "labels"])
    bad = yaml.safe_load(UPSTREAM)["handler"]
    bad[1]["tokenizer"]["padding_side"] = "left"
    with pytest.raises(ValueError, match=r"handler\[1\] \(AlpacaInstructDataHandler\).tokenizer.padding_side: 'left'"):
        upstream_loader(path, tok, tmp_path, handler=bad)
    bad[1]["tokenizer"] = {"vocab_file": "other.model"}
    with pytest.raises(ValueError, match=r"tokenizer.vocab_file: a handler uses the run's tokenizer"):
        upstream_loader(path, tok, tmp_path, handler=bad)
    with pytest.raises(ValueError, match=r"handler\[2\] \(PackingHandler\).seq_length 256 differs from the model's "
                                         r"seq_length 128"):
        upstream_loader(path, tok, tmp_path, handler=yaml.safe_load(UPSTREAM)["handler"][:2] +
                        [{"type": "PackingHandler", "seq_length": 256}])
    with pytest.raises(ValueError, match=r"padding: False \(dynamic shapes\) is not supported"):
        upstream_loader(path, tok, tmp_path, handler=yaml.safe_load(UPSTREAM)["handler"][:2])
    with pytest.raises(ValueError, match=r"create_attention_mask: True needs a PackingHandler"):
        upstream_loader(path, tok, tmp_path, handler=[{"type": "AlpacaInstructDataHandler"}],
                        create_attention_mask=True)
    with pytest.raises(ValueError, match=r"pack_strategy must be 'pack' or 'truncate', got 'fold'"):
        upstream_loader(path, tok, tmp_path, handler=[{"type": "AlpacaInstructDataHandler"},
                                                      {"type": "PackingHandler", "pack_strategy": "fold"}])
    with pytest.raises(ValueError, match=r"handler\[1\] \(sort\) after the encoding handler"):
        upstream_loader(path, tok, tmp_path, handler=[{"type": "AlpacaInstructDataHandler"},
                                                      {"type": "sort", "column_names": "input_ids"}])
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ImportError, match=r"needs the Hugging Face datasets library: pip install datasets"):
        upstream_loader(path, tok, tmp_path)


# ------------------------------------------------------------------ BlendedMegatronDatasetDataLoader
def megatron_prefix(tmp_path, name: str, docs) -> str:
    src = tmp_path / f"{name}.jsonl"
    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    prefix = str(tmp_path / name / "docs")
    assert preprocess(["--input", str(src), "--output-prefix", prefix, "--tokenizer",
                       "mindformers/assets/tiny_corpus/tokenizer.model", "--workers", "1", "--quiet"]) == 0
    return prefix


def megatron(prefix_or_blend, size: int, **config):
    data_path = prefix_or_blend if isinstance(prefix_or_blend, list) else ["1", prefix_or_blend]
    cfg = {"seed": 1234, "split": "1, 0, 0", "seq_length": 16, "eod_mask_loss": False, "reset_position_ids": False,
           "create_attention_mask": True, "reset_attention_mask": False, "create_compressed_eod_mask": False,
           "eod_pad_length": 128, "eod": 2, "pad": -1, "num_dataset_builder_threads": 1, "data_path": data_path}
    cfg.update(config)
    return {"type": "BlendedMegatronDatasetDataLoader", "datasets_type": "GPTDataset", "sizes": [size, 0, 0],
            "config": cfg}


WORDS = ["apple river stone", "cloud paper lamp", "green window song", "quiet forest road"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A .bin/.idx of 40 distinct documents (ids end in EOD = 2), made by the preprocessing tool."""
    tmp = tmp_path_factory.mktemp("megatron")
    return tmp, megatron_prefix(tmp, "main", [f"{WORDS[i % 4]} number {i} of the tiny corpus" for i in range(40)])


def stream_of(loader):
    """The token stream the samples were cut from: samples in stream order, joined on their shared token."""
    source = loader.source
    by_position = np.argsort(source.sample_index)
    return np.concatenate([loader[int(i)][0][:-1] for i in by_position] + [loader[int(by_position[-1])][0][-1:]])


def whole_documents(stream, docs):
    """The stream cut after each EOD: every complete piece must be one of `docs`; their indices."""
    pieces = np.split(stream, np.flatnonzero(stream == 2) + 1)[:-1]
    lookup = {tuple(d.tolist()): i for i, d in enumerate(docs)}
    assert all(tuple(p.tolist()) in lookup for p in pieces), "samples cross only whole documents"
    return [lookup[tuple(p.tolist())] for p in pieces]


def test_megatron_samples_are_windows_of_shuffled_whole_documents(corpus, tok):
    from mindformers.dataset import IndexedDataset
    _, prefix = corpus
    docs = IndexedDataset(prefix)
    docs = [docs[i] for i in range(len(docs))]
    one_pass = (sum(map(len, docs)) - 1) // 16
    loader = build_from_config(megatron(prefix, one_pass), MindFormerModuleType.DATASET_LOADER, tokenizer=tok,
                               seq_length=16)
    assert len(loader) == one_pass and loader.column_names == ["input_ids"]
    assert all(loader[i][0].shape == (17,) and loader[i][0].dtype == np.int32 for i in range(len(loader)))
    order = whole_documents(stream_of(loader), docs)
    assert len(set(order)) == len(order) >= len(docs) - 1 and order != sorted(order), "one shuffled pass"
    two = build_from_config(megatron(prefix, 2 * one_pass), MindFormerModuleType.DATASET_LOADER, seq_length=16)
    order = whole_documents(stream_of(two), docs)
    assert sorted(order[:len(docs)]) == list(range(len(docs))), "the first pass holds every document once"
    again = build_from_config(megatron(prefix, one_pass), MindFormerModuleType.DATASET_LOADER, seq_length=16)
    other = build_from_config(megatron(prefix, one_pass, seed=7), MindFormerModuleType.DATASET_LOADER, seq_length=16)
    assert all((loader[i][0] == again[i][0]).all() for i in range(one_pass))
    assert any((loader[i][0] != other[i][0]).any() for i in range(one_pass))
    assert loader.max_token_id() == max(int(d.max()) for d in docs)
    half = build_from_config(megatron(prefix, 10, split="1, 1, 0"), MindFormerModuleType.DATASET_LOADER,
                             seq_length=16)
    assert max(whole_documents(stream_of(half), docs)) < 20, "split: the train share is the first documents"


def test_megatron_loss_mask_and_position_resets(corpus, tok):
    _, prefix = corpus
    loader = build_from_config(megatron(prefix, 12, eod_mask_loss=True, reset_position_ids=True,
                                        reset_attention_mask=True), MindFormerModuleType.DATASET_LOADER, seq_length=16)
    assert loader.column_names == ["input_ids", "labels", "position_ids"]
    for i in range(len(loader)):
        ids, labels, positions = loader[i]
        after_eod = np.concatenate([[False], ids[:-1] == 2])
        assert (labels[after_eod] == -100).all() and (labels[~after_eod] == ids[~after_eod]).all()
        assert (np.flatnonzero(positions == 0) == np.flatnonzero(after_eod | (np.arange(17) == 0))).all()
        assert ((positions[1:] == positions[:-1] + 1) | (positions[1:] == 0)).all()
    dataset = CausalLanguageModelDataset({"data_loader": megatron(prefix, 12), "input_columns": ["input_ids"],
                                          "batch_size": 4}, tokenizer=tok, seq_length=16, vocab_size=tok.vocab_size)
    assert next(dataset.create_tuple_iterator(num_epochs=1, output_numpy=True))[0].shape == (4, 17)


def test_megatron_blend_follows_the_weights(corpus, tok):
    tmp, prefix = corpus
    zeds = megatron_prefix(tmp, "zeds", ["zzzz zzzz zzzz zzzz"] * 30)
    zed_ids = {i for i in range(tok.vocab_size) if "z" in tok.decode([i])}
    loader = build_from_config(megatron(["0.75", prefix, "0.25", zeds], 20), MindFormerModuleType.DATASET_LOADER,
                               seq_length=16)
    from_zeds = [bool(zed_ids & set(loader[i][0].tolist())) for i in range(20)]
    assert sum(from_zeds) == 5 and not all(from_zeds[:5]), "a quarter of the samples, spread out"
    by_size = build_from_config(megatron([prefix, zeds], 20), MindFormerModuleType.DATASET_LOADER,
                                seq_length=16)
    assert 0 < sum(bool(zed_ids & set(by_size[i][0].tolist())) for i in range(20)) < 20


def test_megatron_refusals(corpus):
    _, prefix = corpus

    def build(cfg, **kwargs):
        return build_from_config(cfg, MindFormerModuleType.DATASET_LOADER, seq_length=16, **kwargs)
    with pytest.raises(ValueError, match=r"sizes \[5, 3, 0\]: only the train split is built"):
        build({**megatron(prefix, 5), "sizes": [5, 3, 0]})
    with pytest.raises(ValueError, match=r"config.s3_cache_path is not supported"):
        build(megatron(prefix, 5, s3_cache_path="s3://x"))
    with pytest.raises(ValueError, match=r"reset_position_ids and config.reset_attention_mask must be equal"):
        build(megatron(prefix, 5, reset_position_ids=True))
    with pytest.raises(ValueError, match=r"config.seq_length 4096 differs from the model's seq_length 16"):
        build(megatron(prefix, 5, seq_length=4096))
    with pytest.raises(ValueError, match=r"datasets_type: 'BERTDataset' is not supported"):
        build({**megatron(prefix, 5), "datasets_type": "BERTDataset"})
    with pytest.raises(ValueError, match=r"does not serve 'loss_mask' \(labels carry it"):
        build(megatron(prefix, 5), column_names=["input_ids", "labels", "loss_mask", "position_ids", "attention_mask"])
    with pytest.raises(ValueError, match=r"does not serve 'attention_mask' \(the model builds"):
        build(megatron(prefix, 5), column_names=["input_ids", "attention_mask"])
    with pytest.raises(ValueError, match=r"in that order"):
        build(megatron(prefix, 5), column_names=["input_ids", "position_ids"])
    with pytest.raises(ValueError, match=r"needs \['labels'\]"):
        build(megatron(prefix, 5, eod_mask_loss=True), column_names=["input_ids"])
    with pytest.raises(ValueError, match=r"config.data_path is required"):
        build(megatron(prefix, 5, data_path=None))
    with pytest.raises(FileNotFoundError, match=r"missing.idx does not exist"):
        build(megatron(prefix + "_missing", 5))
