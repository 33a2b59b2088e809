"""Upstream 2.x `BlendedMegatronDatasetDataLoader`: Megatron GPT samples from .bin/.idx prefixes, blended by weight.

    train_dataset:
      data_loader:
        type: BlendedMegatronDatasetDataLoader
        datasets_type: GPTDataset
        sizes: [8000, 0, 0]             # train samples; valid/test splits are not built here
        config:
          seed: 1234
          seq_length: 4096
          split: "1, 0, 0"
          data_path: ['0.7', data/web_text_document, '0.3', data/books_text_document]   # or prefixes only
          eod_mask_loss: False
          reset_position_ids: False
          reset_attention_mask: False
          eod: 1
          pad: -1
      input_columns: ["input_ids"]      # + "labels" with eod_mask_loss, + "position_ids" with the resets

Like Megatron's GPTDataset, each prefix's train documents (the first `split` share of them) are shuffled once per
pass with `config.seed` and read back to back, and sample k is tokens [k * S, k * S + S + 1) of that stream
(consecutive samples share one token); enough passes are taken for the requested samples, whose order is
then shuffled with the same seed. Several prefixes are mixed by BlendedDataLoader (weights from data_path, or
each prefix's train token count when only prefixes are given). Samples are seq_length + 1 tokens in our layout
(the model shifts); `labels` hold -100 where upstream's loss_mask is 0.
"""
import math
import os
import re
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..tools.paths import REPO_ROOT
from ..tools.register import MindFormerModuleType, MindFormerRegister
from .blended import BlendedDataLoader
from .hf_dataloader import SERVED_COLUMNS, log_no_effect, pick_columns
from .indexed import IndexedDataset, reset_positions
from .instruct import IGNORE

# upstream GPTDatasetConfig keys this loader takes; hints change only speed or memory and are logged once
_CONFIG_KEYS = ("seed", "seq_length", "split", "data_path", "train_data_path", "num_dataset_builder_threads",
                "path_to_cache", "mmap_bin_files", "eod_mask_loss", "reset_position_ids", "reset_attention_mask",
                "create_attention_mask", "create_compressed_eod_mask", "eod_pad_length",
                "compressed_eod_mask_length", "eod", "pad", "add_extra_token_to_sequence")
_HINTS = {
    "num_dataset_builder_threads": "the sample index is built with numpy in one pass",
    "path_to_cache": "the sample index is rebuilt in memory each run (seconds) instead of cached",
    "mmap_bin_files": ".bin files are always memory-mapped",
    "create_attention_mask": "the model builds the causal (block) mask itself from position_ids",
    "create_compressed_eod_mask": "the model builds the block mask itself from position_ids",
}


def parse_split(split) -> List[float]:
    """Upstream's split string ("99, 1, 0") as three normalized ratios (train, valid, test)."""
    ratios = [float(x) for x in re.findall(r"[.0-9]+", str(split))]
    if not 1 <= len(ratios) <= 3 or sum(ratios) <= 0:
        raise ValueError(f"config.split: '{split}' must give 1 to 3 non-negative ratios with a positive sum, "
                         f"e.g. '1, 0, 0'")
    ratios += [0.0] * (3 - len(ratios))
    return [r / sum(ratios) for r in ratios]


def parse_blend(data_path: Sequence[str]) -> Tuple[List[str], Optional[List[float]]]:
    """Upstream's data_path list: [weight, prefix, weight, prefix, ...] or [prefix, prefix, ...]."""
    if isinstance(data_path, str) or not data_path:
        raise ValueError(f"config.data_path must be a non-empty list: [weight, prefix, ...] or [prefix, ...], "
                         f"got {data_path!r}")
    items = [str(x).strip() for x in data_path]

    def number(text):
        try:
            return float(text)
        except ValueError:
            return None
    if len(items) % 2 == 0 and all(number(w) is not None for w in items[::2]):
        weights = [number(w) for w in items[::2]]
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"config.data_path weights must be non-negative with a positive sum, got {weights}")
        return items[1::2], weights
    if any(number(x) is not None for x in items):
        raise ValueError(f"config.data_path {items}: give a weight before every prefix or none at all")
    return items, None


def train_documents(data: IndexedDataset, split) -> int:
    """How many leading documents form the train split."""
    return int(round(parse_split(split)[0] * len(data)))


def train_tokens(data: IndexedDataset, split) -> int:
    return int(data.lengths[:train_documents(data, split)].sum(dtype=np.int64))


def _resolve_prefix(path: str) -> str:
    path = path[:-4] if path.endswith((".bin", ".idx")) else path
    if not os.path.isabs(path) and not os.path.exists(f"{path}.idx") \
            and os.path.exists(os.path.join(REPO_ROOT, f"{path}.idx")):
        path = os.path.join(REPO_ROOT, path)
    return path


@MindFormerRegister.register(MindFormerModuleType.DATASET_LOADER)
class GPTDataset:
    """Megatron GPTDataset samples of seq_length + 1 tokens from one .bin/.idx prefix (see the module doc)."""

    def __init__(self, data_path: str, seq_length: int, num_samples: Optional[int] = None, split: str = "1,0,0",
                 seed: int = 1234, shuffle: bool = False):
        if not isinstance(seq_length, int) or seq_length < 1:
            raise ValueError(f"GPTDataset seq_length must be a positive int, got {seq_length!r}")
        self.dataset_dir = _resolve_prefix(data_path)
        self.data = IndexedDataset(self.dataset_dir)
        self.seq_length, self.shuffle, self.seed = seq_length, bool(shuffle), int(seed)
        documents = np.arange(train_documents(self.data, split))
        tokens_per_pass = train_tokens(self.data, split)
        if tokens_per_pass < seq_length + 1:
            raise ValueError(f"GPTDataset {self.dataset_dir}: the train split ({len(documents)} of "
                             f"{len(self.data)} documents) has {tokens_per_pass} tokens, but one sample "
                             f"(seq_length + 1) needs {seq_length + 1}")
        if num_samples is None:
            num_samples = (tokens_per_pass - 1) // seq_length
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"GPTDataset num_samples must be a positive int, got {num_samples!r}")
        passes = math.ceil((num_samples * seq_length + 1) / tokens_per_pass)
        rng = np.random.RandomState(self.seed)
        self.document_index = np.concatenate([rng.permutation(documents) for _ in range(passes)])
        self.document_ends = np.cumsum(self.data.lengths[self.document_index], dtype=np.int64)
        self.sample_index = rng.permutation(num_samples)
        self.num_tokens = num_samples * seq_length + 1

    def __len__(self) -> int:
        return len(self.sample_index)

    def __getitem__(self, index: int) -> Tuple[np.ndarray]:
        start = int(self.sample_index[index]) * self.seq_length
        end = start + self.seq_length + 1
        out = np.empty(self.seq_length + 1, dtype=np.int32)
        position = int(np.searchsorted(self.document_ends, start, side="right"))
        filled = 0
        while filled < len(out):
            doc = int(self.document_index[position])
            doc_start = int(self.document_ends[position]) - int(self.data.lengths[doc])
            first = start + filled - doc_start
            take = min(int(self.data.lengths[doc]) - first, end - start - filled)
            base = int(self.data.offsets[doc]) // self.data.dtype.itemsize + first
            out[filled:filled + take] = self.data.tokens[base:base + take]
            filled += take
            position += 1
        return (out,)

    def max_token_id(self) -> int:
        """Largest id in the prefix (one pass over the memory map, in 64M-token slices)."""
        step = 1 << 26
        return max(int(self.data.tokens[i:i + step].max()) for i in range(0, len(self.data.tokens), step))

    def epoch_order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self))


@MindFormerRegister.register(MindFormerModuleType.DATASET_LOADER)
class BlendedMegatronDatasetDataLoader:
    """Upstream's Megatron loader (datasets_type GPTDataset, sizes, config) on our indexed/blended readers."""

    def __init__(self, datasets_type: str = "GPTDataset", sizes: Optional[List[int]] = None,
                 config: Optional[dict] = None, shuffle: bool = False, column_names: Optional[List[str]] = None,
                 tokenizer=None, seq_length: Optional[int] = None, seed: int = 0):
        if datasets_type != "GPTDataset":
            raise ValueError(f"BlendedMegatronDatasetDataLoader datasets_type: '{datasets_type}' is not supported "
                             f"(GPTDataset)")
        sizes = list(sizes or [])
        if not 1 <= len(sizes) <= 3 or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in sizes) \
                or sizes[0] < 1:
            raise ValueError(f"BlendedMegatronDatasetDataLoader sizes must be [train samples >= 1, 0, 0], got "
                             f"{sizes!r}")
        if any(sizes[1:]):
            raise ValueError(f"BlendedMegatronDatasetDataLoader sizes {sizes}: only the train split is built; "
                             f"give the valid/test size 0 and evaluate through eval_dataset")
        cfg = dict(config or {})
        unknown = [k for k in cfg if k not in _CONFIG_KEYS]
        if unknown:
            raise ValueError(f"BlendedMegatronDatasetDataLoader config.{unknown[0]} is not supported; accepted: "
                             f"{', '.join(_CONFIG_KEYS)}")
        for key in [k for k in _HINTS if k in cfg]:
            if (cfg[key] is False) if key == "mmap_bin_files" else cfg[key] not in (None, False):
                log_no_effect(f"config.{key}", _HINTS[key])
        for key in ("eod_pad_length", "compressed_eod_mask_length"):   # sizes upstream's compressed mask only
            value = cfg.get(key, 128)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"config.{key} must be a positive int, got {value!r}")
        seq_length = self._seq_length(cfg.get("seq_length"), seq_length)
        if cfg.get("add_extra_token_to_sequence", True) is not True:
            raise ValueError("config.add_extra_token_to_sequence: only True is supported (samples are seq_length + "
                             "1 tokens; the model shifts)")
        if bool(cfg.get("reset_position_ids")) != bool(cfg.get("reset_attention_mask")):
            raise ValueError("config.reset_position_ids and config.reset_attention_mask must be equal here: the "
                             "model derives its attention mask from the position ids")
        self.reset = bool(cfg.get("reset_position_ids"))
        self.eod_mask_loss = bool(cfg.get("eod_mask_loss"))
        self.eod = self._token(cfg, "eod", getattr(tokenizer, "eos_token_id", None))
        self.pad = self._token(cfg, "pad", None)
        if (self.reset or self.eod_mask_loss) and self.eod is None:
            raise ValueError("config.eod: reset_position_ids / eod_mask_loss need the EOD token id (config.eod or "
                             "a tokenizer with an eos_token)")
        if cfg.get("data_path") is not None and cfg.get("train_data_path") is not None:
            raise ValueError("config.data_path and config.train_data_path are exclusive (give one)")
        if cfg.get("data_path") is None and cfg.get("train_data_path") is None:
            raise ValueError("config.data_path is required: [weight, prefix, ...] of .bin/.idx prefixes (mock data "
                             "is not generated)")
        split = cfg.get("split", "1,0,0") if cfg.get("data_path") is not None else "1"
        prefixes, weights = parse_blend(cfg.get("data_path") or cfg.get("train_data_path"))
        data_seed = int(cfg.get("seed", 1234))
        if len(prefixes) == 1:
            self.source = GPTDataset(prefixes[0], seq_length, sizes[0], split, data_seed, shuffle)
        else:
            if weights is None:   # as upstream: in proportion to each prefix's (train) size
                weights = [float(train_tokens(IndexedDataset(_resolve_prefix(p)), split)) for p in prefixes]
            total = sum(weights)
            specs = [{"weight": w, "type": "GPTDataset", "data_path": p, "split": split, "seed": data_seed,
                      "shuffle": shuffle, "num_samples": max(1, math.ceil(w / total * sizes[0]))}
                     for p, w in zip(prefixes, weights) if w > 0]
            self.source = BlendedDataLoader(specs, size=sizes[0], seq_length=seq_length, seed=int(seed))
        self.seq_length = seq_length
        self.num_tokens = sizes[0] * seq_length + 1
        self.dataset_dir = ", ".join(prefixes)
        needed = ["input_ids"] + (["labels"] if self.eod_mask_loss or self.pad is not None else []) \
            + (["labels", "position_ids"] if self.reset else [])
        natural = list(SERVED_COLUMNS[:max(SERVED_COLUMNS.index(c) for c in needed) + 1])
        self.column_names = pick_columns(column_names, natural, sorted(set(needed), key=SERVED_COLUMNS.index),
                                         "BlendedMegatronDatasetDataLoader")

    @staticmethod
    def _seq_length(configured, model: Optional[int]) -> int:
        if configured is not None and (isinstance(configured, bool) or not isinstance(configured, int)
                                       or configured < 1):
            raise ValueError(f"config.seq_length must be a positive int, got {configured!r}")
        if configured is not None and model is not None and configured != model:
            raise ValueError(f"config.seq_length {configured} differs from the model's seq_length {model}")
        if (configured or model) is None:
            raise ValueError("config.seq_length is required (or the model's seq_length)")
        return configured or model

    @staticmethod
    def _token(cfg: dict, key: str, fallback: Optional[int]) -> Optional[int]:
        value = cfg.get(key, -1)
        if isinstance(value, bool) or not isinstance(value, int) or value < -1:
            raise ValueError(f"config.{key} must be a token id, or -1 for none, got {value!r}")
        return value if value >= 0 else fallback

    def __len__(self) -> int:
        return len(self.source)

    def epoch_order(self, epoch: int) -> np.ndarray:
        return self.source.epoch_order(epoch)

    def max_token_id(self) -> int:
        return self.source.max_token_id()

    def __getitem__(self, index: int):
        ids = self.source[index][0]
        labels = ids.copy()
        if self.eod_mask_loss:   # no loss on the token that follows an EOD (upstream's loss_mask at the EOD)
            labels[1:][ids[:-1] == self.eod] = IGNORE
        if self.pad is not None:
            labels[ids == self.pad] = IGNORE
            ids = np.where(ids == self.pad, 0, ids).astype(np.int32)
        positions = reset_positions(ids, self.eod) if self.reset else np.arange(len(ids), dtype=np.int32)
        columns = {"input_ids": ids, "labels": labels, "position_ids": positions}
        return tuple(columns[c] for c in self.column_names)
