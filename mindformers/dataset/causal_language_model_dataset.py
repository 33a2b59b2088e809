"""Causal-LM pretraining dataset: a registered data loader, sharded, shuffled per epoch, batched."""
import copy
import os
from typing import Iterator, Optional

import numpy as np
import mindspore.dataset as ds

from mindformers.tools.register import MindFormerModuleType, MindFormerRegister, build_from_config

from .indexed import reset_positions

# Upstream dataset_config keys. numa_enable, prefetch_size and python_multiprocessing are speed settings that the
# config schema logs as having no effect here; output_columns must equal the columns served.
_CONFIG_KEYS = ("data_loader", "input_columns", "output_columns", "construct_args_key", "column_order",
                "batch_size", "drop_remainder", "repeat", "num_parallel_workers", "python_multiprocessing",
                "numa_enable", "prefetch_size", "seed", "eod_reset", "eod_token_id", "dynamic_batch", "divisor",
                "remainder", "auto_tune", "autotune_per_step", "filepath_prefix", "profile")
EOD_RESET_COLUMNS = ["input_ids", "labels", "position_ids"]


class EodResetSource:
    """A pretraining loader's samples as (input_ids, labels, position_ids) with positions restarting after each
    EOD token, so the model attends only within each packed document (Megatron's reset_position_ids +
    reset_attention_mask). The loss still covers every token."""

    def __init__(self, loader, eod_token_id: int):
        self.loader, self.eod_token_id = loader, int(eod_token_id)

    def __len__(self) -> int:
        return len(self.loader)

    def __getitem__(self, index: int):
        ids = self.loader[index][0]
        return ids, ids.copy(), reset_positions(ids, self.eod_token_id)

    def __getattr__(self, name):  # epoch_order, dataset_dir, seq_length, num_tokens of the wrapped loader
        if name == "loader":
            raise AttributeError(name)
        return getattr(self.loader, name)


class EpochShardSampler(ds.Sampler):
    """This rank's sample indices as one endless stream cut into equal epochs, optionally starting late.

    Epoch e reads `loader.epoch_order(e)` (or 0..n-1), keeps the first n - n % device_num entries and takes
    every device_num-th one from rank_id, so ranks are disjoint and equally long. With drop_remainder the
    epoch is trimmed to whole batches. Each pass MindSpore asks for yields the next `epoch_length` indices of
    the stream, beginning `skip_samples` in: resuming after N consumed samples replays the exact same
    stream minus its first N, across epoch boundaries too.
    """

    def __init__(self, loader, rank_id: int, device_num: int, batch_size: int, drop_remainder: bool,
                 skip_samples: int = 0):
        self.loader, self.rank_id, self.device_num = loader, rank_id, device_num
        per_rank = len(loader) // device_num
        self.epoch_length = per_rank - per_rank % batch_size if drop_remainder else per_rank
        self.position = skip_samples
        self._cached_epoch, self._cached_order = None, None
        super().__init__()   # reads __len__, so the attributes above must exist first

    def order(self, epoch: int) -> np.ndarray:
        """This rank's indices for one epoch."""
        if self._cached_epoch != epoch:
            order = self.loader.epoch_order(epoch) if hasattr(self.loader, "epoch_order") \
                else np.arange(len(self.loader))
            usable = len(order) - len(order) % self.device_num
            self._cached_order = np.asarray(order[:usable][self.rank_id::self.device_num])[:self.epoch_length]
            self._cached_epoch = epoch
        return self._cached_order

    def __iter__(self) -> Iterator[int]:
        start, self.position = self.position, self.position + self.epoch_length
        for pos in range(start, start + self.epoch_length):
            epoch, offset = divmod(pos, self.epoch_length)
            yield int(self.order(epoch)[offset])

    def __len__(self) -> int:
        return self.epoch_length

    def __deepcopy__(self, memo):
        # MindSpore deep-copies the sampler for every iterator it creates; share the read-only loader
        # instead of copying its token array each time. The copy's own state is only rebound, never mutated.
        clone = copy.copy(self)
        memo[id(self)] = clone
        return clone


def _dynamic_padding(columns, cfg):
    """per_batch_map for upstream's `dynamic_batch`: cut each batch of padded (input_ids, labels, ...) rows to
    the longest real row, rounded up to a length L with L % divisor == remainder (default 64 and 1: 65, 129, ...
    tokens), so short batches cost less and only a few distinct shapes (one graph each) occur."""
    if "labels" not in columns:
        raise ValueError("CausalLanguageModelDataset dynamic_batch: True needs a labels column (finetune data whose "
                         "padding is labelled -100); pretraining samples have no padding to drop")
    divisor, remainder = int(cfg.get("divisor") or 64), int(cfg.get("remainder") if cfg.get("remainder") is not None
                                                             else 1)
    if divisor < 1 or not 0 <= remainder < divisor:
        raise ValueError(f"CausalLanguageModelDataset dynamic_batch needs divisor >= 1 and 0 <= remainder < divisor, "
                         f"got {divisor} and {remainder}")
    label_col = columns.index("labels")

    def cut(*batch_columns):  # each column a list of rows, then MindSpore's BatchInfo
        arrays = [np.stack(c) for c in batch_columns[:-1]]
        labelled = arrays[label_col] != -100
        real = int(labelled.shape[1] - np.argmax(labelled[:, ::-1], axis=1).min()) if labelled.any() else 1
        full = arrays[0].shape[1]
        length = min(full, -(-(real - remainder) // divisor) * divisor + remainder if real > remainder else remainder)
        return tuple(a[:, :max(length, 2)] for a in arrays)

    return cut


def _select_columns(dataset, columns, cfg):
    """Upstream's construct_args_key (or column_order): the columns handed to the model, in that order;
    output_columns must name the columns served."""
    for key in ("output_columns",):
        if cfg.get(key) and list(cfg[key]) != columns:
            raise ValueError(f"train_dataset.{key}: {list(cfg[key])} but the data gives {columns}; remove the key "
                             f"or make it equal")
    wanted = cfg.get("construct_args_key") or cfg.get("column_order")
    if not wanted:
        return dataset
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise ValueError(f"train_dataset.construct_args_key names {missing}, which the data does not give (it gives "
                         f"{columns}); list only those columns")
    return dataset.project(list(wanted)) if list(wanted) != columns else dataset


@MindFormerRegister.register(MindFormerModuleType.DATASET)
class CausalLanguageModelDataset:
    """Causal language model pretraining dataset (upstream name); constructing it returns a mindspore Dataset.

    `dataset_config` holds the upstream keys: `data_loader` ({type, dataset_dir, shuffle, ...}, built through
    the registry with `tokenizer`, `seq_length` and `seed`; or a ready loader object), `input_columns`
    (default ["input_ids"]),
    `batch_size`, `drop_remainder`, `repeat`, `num_parallel_workers`, `python_multiprocessing`, `seed`.
    Rank `rank_id` of `device_num` reads a disjoint shard. Shuffling is a numpy permutation seeded by
    (seed, epoch), so two builds give the same order. `skip_samples` is how many samples this rank already
    consumed (steps * batch_size); the stream resumes right after them.

    The returned object is the batched (and repeated) `mindspore.dataset.Dataset`, as upstream does;
    `get_dataset_size()` is the number of batches per epoch (times `repeat`).
    """

    def __new__(cls, dataset_config, tokenizer=None, seq_length: Optional[int] = None, rank_id: int = 0,
                device_num: int = 1, seed: int = 0, skip_samples: int = 0,
                vocab_size: Optional[int] = None) -> ds.Dataset:
        cfg = dataset_config
        if not hasattr(cfg, "keys"):
            raise ValueError(f"CausalLanguageModelDataset dataset_config must be a mapping of the train_dataset "
                             f"keys, got {cfg!r}")
        unknown = [k for k in cfg.keys() if k not in _CONFIG_KEYS]
        if unknown:
            raise ValueError(f"CausalLanguageModelDataset dataset_config has unknown key '{unknown[0]}'; "
                             f"accepted: {', '.join(_CONFIG_KEYS)}")
        if cfg.get("data_loader") is None:
            raise ValueError("CausalLanguageModelDataset dataset_config needs a data_loader, e.g. "
                             "{type: TextDataLoader, dataset_dir: mindformers/assets/tiny_corpus/corpus.txt}")
        if not 0 <= rank_id < device_num:
            raise ValueError(f"CausalLanguageModelDataset rank_id must be in [0, {device_num}), got {rank_id}")
        batch_size = int(cfg.get("batch_size", 8))
        drop_remainder = bool(cfg.get("drop_remainder", True))
        seed = int(cfg["seed"] if cfg.get("seed") is not None else seed)
        if batch_size < 1 or skip_samples < 0:
            raise ValueError(f"CausalLanguageModelDataset needs batch_size >= 1 and skip_samples >= 0, got "
                             f"{batch_size} and {skip_samples}")

        loader = cfg["data_loader"]
        if isinstance(loader, str) or hasattr(loader, "keys"):
            # loaders that serve several columns (HFDataLoader, Megatron) check input_columns as column_names
            loader = build_from_config(loader, MindFormerModuleType.DATASET_LOADER, tokenizer=tokenizer,
                                       seq_length=seq_length, seed=seed, column_names=cfg.get("input_columns"))
        if vocab_size and hasattr(loader, "max_token_id"):
            # pre-tokenized data (indexed, MindRecord) may come from another tokenizer: out-of-range ids would
            # not fail on every device, they would train on garbage
            top = loader.max_token_id()
            if top >= vocab_size:
                raise ValueError(f"CausalLanguageModelDataset: {loader.dataset_dir} holds token id {top} but "
                                 f"model_config.vocab_size is {vocab_size}; the data was tokenized with another "
                                 f"vocabulary (re-run preprocess_data with the model's tokenizer)")
        columns = list(getattr(loader, "column_names", None) or cfg.get("input_columns") or ["input_ids"])
        if cfg.get("eod_reset"):
            eod = cfg.get("eod_token_id")
            eod = eod if eod is not None else getattr(tokenizer, "eos_token_id", None)
            if isinstance(eod, bool) or not isinstance(eod, int):
                raise ValueError("CausalLanguageModelDataset eod_reset: True needs eod_token_id (an int) or a "
                                 f"tokenizer with an eos_token, got {eod!r}")
            if cfg.get("input_columns") and columns != EOD_RESET_COLUMNS:
                raise ValueError(f"CausalLanguageModelDataset eod_reset: True gives the columns {EOD_RESET_COLUMNS}; "
                                 f"input_columns is {columns}")
            loader, columns = EodResetSource(loader, eod), EOD_RESET_COLUMNS
        sampler = EpochShardSampler(loader, rank_id, device_num, batch_size, drop_remainder, skip_samples)
        if sampler.epoch_length == 0:
            need = batch_size * device_num if drop_remainder else device_num
            raise ValueError(
                f"CausalLanguageModelDataset: {getattr(loader, 'dataset_dir', 'the data loader')} gives "
                f"{len(loader)} samples of seq_length + 1 tokens, too few for one batch: batch_size {batch_size} "
                f"on {device_num} device(s) needs {need} samples" +
                (f" ({need * (loader.seq_length + 1)} tokens; it has {loader.num_tokens})"
                 if hasattr(loader, "num_tokens") else "") +
                (f" ({loader.data_summary})" if hasattr(loader, "data_summary") else ""))

        workers = max(1, min(int(cfg.get("num_parallel_workers", 8)), os.cpu_count() or 1))
        # One generator worker: a sample is a numpy slice, and more Python workers only add contention
        # (measured 29k samples/s with one worker, 9k with two, on 2 cores).
        dataset = ds.GeneratorDataset(loader, column_names=columns,
                                      sampler=sampler, num_parallel_workers=1)
        if cfg.get("dynamic_batch"):
            dataset = dataset.batch(batch_size, drop_remainder=drop_remainder, num_parallel_workers=1,
                                    per_batch_map=_dynamic_padding(columns, cfg))
        else:
            dataset = dataset.batch(batch_size, drop_remainder=drop_remainder, num_parallel_workers=workers)
        dataset = _select_columns(dataset, columns, cfg)
        repeat = int(cfg.get("repeat", 1))
        return dataset.repeat(repeat) if repeat > 1 else dataset
