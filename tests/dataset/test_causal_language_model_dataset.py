"""CausalLanguageModelDataset: registry build, batching, seeded shuffle, resume skip, rank sharding."""
import mindspore
import mindspore.dataset as ds
import pytest

from mindformers.dataset import TextDataLoader
from mindformers.tools.register import MindFormerModuleType, build_from_config

mindspore.set_device("CPU")

CORPUS = "mindformers/assets/tiny_corpus/eval.txt"
SEQ = 16          # 568 distinct samples of 17 tokens in eval.txt
BATCH = 4


def build(tok, rank_id=0, device_num=1, seed=0, skip_samples=0, shuffle=True, config_seed=None, **overrides):
    cfg = {"data_loader": {"type": "TextDataLoader", "dataset_dir": CORPUS, "shuffle": shuffle},
           "input_columns": ["input_ids"], "output_columns": ["input_ids"], "batch_size": BATCH,
           "drop_remainder": True, "repeat": 1, "num_parallel_workers": 8, "python_multiprocessing": False,
           "numa_enable": False, "prefetch_size": 1}
    cfg.update(overrides)
    if config_seed is not None:
        cfg["seed"] = config_seed
    return build_from_config({"type": "CausalLanguageModelDataset", "dataset_config": cfg},
                             MindFormerModuleType.DATASET, tokenizer=tok, seq_length=SEQ, rank_id=rank_id,
                             device_num=device_num, seed=seed, skip_samples=skip_samples)


@pytest.fixture(scope="module")
def index_of(tok):
    """Sample row -> its index in corpus order."""
    loader = TextDataLoader(CORPUS, tok, SEQ)
    rows = {row.tobytes(): i for i, row in enumerate(loader.samples)}
    assert len(rows) == len(loader) == 568
    return rows


def sample_stream(dataset, index_of, epochs=1):
    """Sample indices the dataset yields over `epochs` passes, one list per pass."""
    it = dataset.create_tuple_iterator(num_epochs=epochs, output_numpy=True)
    passes = []
    for _ in range(epochs):
        passes.append([index_of[row.tobytes()] for (batch,) in it for row in batch])
    return passes


def test_batches_and_size(tok, index_of):
    dataset = build(tok, shuffle=False)
    assert isinstance(dataset, ds.Dataset)
    assert dataset.get_dataset_size() == 568 // BATCH
    (batch,) = next(dataset.create_tuple_iterator(output_numpy=True))
    assert batch.shape == (BATCH, SEQ + 1) and str(batch.dtype) == "int32"
    assert sample_stream(dataset, index_of) == [list(range(568))]


def test_shuffle_is_deterministic_and_reshuffles_each_epoch(tok, index_of):
    first = sample_stream(build(tok, seed=3), index_of, epochs=2)
    second = sample_stream(build(tok, seed=3), index_of, epochs=2)
    assert first == second
    assert sorted(first[0]) == sorted(first[1]) == list(range(568))
    assert first[0] != first[1]
    assert sample_stream(build(tok, seed=4), index_of)[0] != first[0]
    # dataset_config.seed wins over the seed the trainer passes in.
    assert sample_stream(build(tok, seed=99, config_seed=3), index_of)[0] == first[0]


def test_skip_samples_resumes_the_same_stream(tok, index_of):
    epoch = 568 // BATCH * BATCH
    full = [i for p in sample_stream(build(tok, seed=5), index_of, epochs=4) for i in p]
    for skip in (8, epoch + 12):      # inside the first epoch, and past an epoch boundary
        resumed = sample_stream(build(tok, seed=5, skip_samples=skip), index_of, epochs=2)
        assert all(len(p) == epoch for p in resumed)
        assert [i for p in resumed for i in p] == full[skip:skip + 2 * epoch]


def test_ranks_are_disjoint_and_cover_the_data(tok, index_of):
    for shuffle in (False, True):
        shards = [sample_stream(build(tok, rank_id=r, device_num=3, seed=1, shuffle=shuffle,
                                      drop_remainder=False), index_of)[0] for r in range(3)]
        assert [len(s) for s in shards] == [568 // 3] * 3
        union = set().union(*shards)
        assert len(union) == 3 * (568 // 3)
        order = TextDataLoader(CORPUS, tok, SEQ, shuffle=shuffle, seed=1).epoch_order(0)
        assert union == set(order[:3 * (568 // 3)].tolist())


def test_repeat(tok, index_of):
    dataset = build(tok, seed=2, repeat=2)
    assert dataset.get_dataset_size() == 2 * (568 // BATCH)
    (stream,) = sample_stream(dataset, index_of)
    assert stream == [i for p in sample_stream(build(tok, seed=2), index_of, epochs=2) for i in p]


def test_ready_loader_object(tok, index_of):
    loader = TextDataLoader(CORPUS, tok, SEQ)
    dataset = build(tok, data_loader=loader, batch_size=8, drop_remainder=False)
    assert dataset.get_dataset_size() == 568 // 8
    assert sample_stream(dataset, index_of) == [list(range(568))]


class AttrDict(dict):
    """The shape of a parsed YAML config: a dict that also allows attribute access."""
    __getattr__ = dict.__getitem__


def test_attribute_dict_config(tok):
    cfg = AttrDict(data_loader=AttrDict(type="TextDataLoader", dataset_dir=CORPUS, shuffle=False),
                   batch_size=BATCH, drop_remainder=True)
    dataset = build_from_config(AttrDict(type="CausalLanguageModelDataset", dataset_config=cfg),
                                MindFormerModuleType.DATASET, tokenizer=tok, seq_length=SEQ)
    assert dataset.get_dataset_size() == 568 // BATCH


def test_errors(tok, write_docs):
    with pytest.raises(ValueError, match="unknown key 'bach_size'"):
        build(tok, bach_size=2)
    with pytest.raises(ValueError, match="needs a data_loader"):
        build(tok, data_loader=None)
    with pytest.raises(ValueError, match="rank_id"):
        build(tok, rank_id=2, device_num=2)
    small = write_docs("small.txt", ["Return the value of the file object. " * 6])
    with pytest.raises(ValueError, match=r"batch_size 64 on 2 device\(s\) needs 128 samples \(2176 tokens; it has"):
        build(tok, device_num=2, batch_size=64, data_loader={"type": "TextDataLoader", "dataset_dir": str(small)})
