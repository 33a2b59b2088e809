"""CommonDataLoader: instruction rows from a local json/jsonl/parquet file through a handler list (see
instruct.py for the handlers), optionally packed several samples per sequence (`packing: pad`)."""
import logging
import os
from collections import Counter
from typing import List, Optional, Tuple

import numpy as np

from ..tools.paths import resolve_repo_path
from ..tools.register import MindFormerModuleType, MindFormerRegister, build_from_config
from .instruct import IGNORE
from .rows import read_rows

logger = logging.getLogger("mindformers")


def pack_samples(samples: List[Tuple[np.ndarray, np.ndarray]], length: int, pad_id: int) -> List[tuple]:
    """Greedy in-order packing of padded (input_ids, labels) samples into (input_ids, labels, position_ids) rows
    of `length` tokens. A sample's real length ends at its last labelled token; position ids restart at 0 for
    each sample (and for the trailing padding), which is what confines attention to a sample in the model.
    Every sample starts with a prompt token (label -100), so no loss crosses a sample boundary."""
    rows, ids, labels, positions = [], [], [], []

    def flush():
        used = len(ids)
        row_ids = np.full(length, pad_id, np.int32)
        row_labels = np.full(length, IGNORE, np.int32)
        row_pos = np.zeros(length, np.int32)
        row_ids[:used], row_labels[:used], row_pos[:used] = ids, labels, positions
        row_pos[used:] = np.arange(length - used)
        rows.append((row_ids, row_labels, row_pos))
        ids.clear(), labels.clear(), positions.clear()

    for sample_ids, sample_labels in samples:
        labelled = np.flatnonzero(sample_labels != IGNORE)
        n = int(labelled[-1]) + 1 if labelled.size else 0
        if n == 0:
            continue
        if len(ids) + n > length:
            flush()
        ids.extend(sample_ids[:n].tolist())
        labels.extend(sample_labels[:n].tolist())
        positions.extend(range(n))
    if ids:
        flush()
    return rows


@MindFormerRegister.register(MindFormerModuleType.DATASET_LOADER)
class CommonDataLoader:
    """Rows from a local json/jsonl/parquet file through a handler list; the EpochShardSampler interface.

    `data_summary` says how many examples were read, dropped (and why), truncated and kept.
    """

    def __init__(self, data_files: str, handler: List[dict], tokenizer=None, seq_length: Optional[int] = None,
                 path: str = "json", load_func: str = "load_dataset", shuffle: bool = False, seed: int = 0,
                 split: str = "train", packing: Optional[str] = None):
        if load_func != "load_dataset":
            raise ValueError(f"CommonDataLoader.load_func '{load_func}' is not supported; use load_dataset")
        if split != "train":
            raise ValueError(f"CommonDataLoader.split '{split}': local data_files have only the 'train' split")
        if path not in ("json", "parquet") and not os.path.isfile(resolve_repo_path(path, "path")):
            raise ValueError(f"CommonDataLoader.path '{path}' must be json, parquet or a local file")
        if tokenizer is None:
            raise ValueError("CommonDataLoader needs a tokenizer (set processor.tokenizer in the config)")
        if hasattr(tokenizer, "keys"):
            tokenizer = build_from_config(tokenizer, MindFormerModuleType.TOKENIZER)
        if packing not in (None, False, "pad"):
            raise ValueError(f"CommonDataLoader.packing must be null or 'pad' (pack samples in order, pad the rest), "
                             f"got {packing!r}")
        if not handler:
            raise ValueError("CommonDataLoader needs a handler list, e.g. [{type: AlpacaInstructDataHandler}]")
        files = [data_files] if isinstance(data_files, str) else list(data_files)
        self.dataset_dir, self.shuffle, self.seed, self.seq_length = files[0], bool(shuffle), int(seed), seq_length
        handlers = [build_from_config(h, MindFormerModuleType.DATA_HANDLER, tokenizer=tokenizer,
                                      seq_length=seq_length) for h in handler]
        samples, read = [], 0
        for file in files:
            for where, row in read_rows(file, path):
                read += 1
                sample = row
                for h in handlers:
                    sample = h.encode(sample, where)
                    if sample is None:
                        break
                if sample is not None:
                    samples.append(sample)
        dropped, truncated = Counter(), sum(getattr(h, "truncated", 0) for h in handlers)
        for h in handlers:
            dropped.update(getattr(h, "dropped", {}))
        reasons = "; ".join(f"{n} {reason}" for reason, n in dropped.items())
        self.data_summary = (f"{read} examples read from {', '.join(map(str, files))}, "
                             f"{sum(dropped.values())} dropped" + (f" ({reasons})" if reasons else "") +
                             f", {truncated} truncated, {len(samples)} kept")
        if truncated:
            logger.warning("CommonDataLoader: %d of %d examples were longer than seq_length + 1 = %d tokens and were "
                           "truncated (truncation: response; 'drop' skips them instead)", truncated, read,
                           int(seq_length) + 1)
        if dropped:
            logger.warning("CommonDataLoader: %s", self.data_summary)
        if not samples:
            raise ValueError(f"CommonDataLoader: no sample left after the handlers: {self.data_summary}")
        self.response_tokens = int(sum((s[1] != IGNORE).sum() for s in samples))  # of the first answer
        if packing:
            if len(samples[0]) != 2:
                raise ValueError(f"CommonDataLoader.packing packs (input_ids, labels) samples; the handlers give "
                                 f"{len(samples[0])} columns (preference pairs cannot be packed)")
            pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
            packed = pack_samples(samples, int(seq_length) + 1, pad_id)
            logger.info("CommonDataLoader %s: packed %d samples into %d sequences", files, len(samples), len(packed))
            self.data_summary += f", packed into {len(packed)} sequences"
            samples = packed
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        return tuple(a.copy() for a in self.samples[index])

    def epoch_order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.samples))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.samples))
