"""Upstream 2.x `HFDataLoader`: local json/jsonl/parquet/arrow/csv files through Hugging Face `datasets`.

    train_dataset:
      data_loader:
        type: HFDataLoader
        load_func: load_dataset
        path: json                      # a builder (json, parquet, arrow, csv, text), a local file or directory
        data_files: data/alpaca.json
        split: train
        shuffle: False
        handler:
          - {type: take, n: 2000}       # datasets methods: take, skip, shuffle, select_columns, ...
          - type: AlpacaInstructDataHandler
            seq_length: 4096
            padding: False              # with a PackingHandler after it (packing drops the padding)
            tokenizer: {trust_remote_code: True, padding_side: right}
          - {type: PackingHandler, seq_length: 4096, pack_strategy: pack}   # pack | truncate
      input_columns: ["input_ids", "labels", "position_ids"]

Rows follow our layout, not upstream's: `input_ids` and `labels` of seq_length + 1 tokens, labels unshifted with
-100 where no loss is taken (the model shifts), and `position_ids` that restart at 0 at each packed sample, from
which the model builds the block-diagonal causal mask. So upstream's `loss_mask` (= labels != -100),
`attention_mask` and `actual_seq_len` columns carry nothing more and are refused by name in input_columns.
"""
import glob
import logging
import os
from typing import List, Optional, Sequence

import numpy as np

from ..tools.logger import log_once
from ..tools.paths import REPO_ROOT
from ..tools.register import MindFormerModuleType, MindFormerRegister, build_from_config
from ..tools.textfile import check_utf8
from .common import pack_samples
from .instruct import IGNORE

logger = logging.getLogger("mindformers")

SERVED_COLUMNS = ("input_ids", "labels", "position_ids")   # the order model construct() takes them in
_DERIVED = {
    "loss_mask": "labels carry it (-100 = no loss)",
    "attention_mask": "the model builds the causal (block) mask from position_ids",
    "actual_seq_len": "the model builds the block mask from position_ids",
}
_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".arrow": "arrow", ".csv": "csv",
             ".txt": "text"}
# datasets.Dataset methods a handler entry may name (plain-data arguments only); take/skip also work on
# encoded and packed rows.
_DATASET_METHODS = ("take", "skip", "shuffle", "select_columns", "remove_columns", "rename_column",
                    "rename_columns", "sort", "flatten")
_HANDLER_TOKENIZER_KEYS = ("trust_remote_code", "padding_side")
def log_no_effect(key: str, reason: str) -> None:
    """Log once per process that a speed/placement hint `key` changes nothing here."""
    log_once(("data loader", key), "%s has no effect on this backend: %s", key, reason)


def pick_columns(requested: Optional[Sequence[str]], natural: List[str], needed: Sequence[str],
                 who: str) -> List[str]:
    """The served column names for `requested` (upstream input_columns), checked; `natural` when None."""
    if requested is None:
        return natural
    requested = list(requested)
    for name in requested:
        if name in _DERIVED:
            raise ValueError(f"input_columns: {who} does not serve '{name}' ({_DERIVED[name]}); use a prefix of "
                             f"{list(SERVED_COLUMNS)}")
        if name not in SERVED_COLUMNS:
            raise ValueError(f"input_columns: {who} has no column '{name}'; it serves a prefix of "
                             f"{list(SERVED_COLUMNS)}")
    if requested != list(SERVED_COLUMNS[:len(requested)]):
        raise ValueError(f"input_columns {requested}: {who} serves a prefix of {list(SERVED_COLUMNS)}, in that "
                         f"order (the model takes them positionally)")
    missing = [n for n in needed if n not in requested]
    if missing:
        raise ValueError(f"input_columns {requested}: {who} needs {missing} here ({', '.join(needed)} carry the "
                         f"loss masking or sample boundaries); use {list(SERVED_COLUMNS[:len(natural)])}")
    return requested


def _local(path: str) -> Optional[str]:
    """`path` as an existing local file or directory (cwd, then the repo root), else None."""
    expanded = os.path.expanduser(str(path))
    for candidate in ([expanded] if os.path.isabs(expanded) else [expanded, os.path.join(REPO_ROOT, expanded)]):
        if os.path.exists(candidate):
            return os.path.abspath(candidate)
    return None


def _local_files(data_files, key: str = "data_files"):
    """data_files (a path, list, or {split: paths}) with each entry resolved to an existing local path or glob."""
    if hasattr(data_files, "keys"):
        return {k: _local_files(v, f"{key}.{k}") for k, v in data_files.items()}
    if isinstance(data_files, (list, tuple)):
        return [_local_files(v, key) for v in data_files]
    found = _local(data_files)
    if found:
        return found
    for base in ("", REPO_ROOT):
        pattern = os.path.join(base, os.path.expanduser(str(data_files)))
        if glob.glob(pattern):
            return os.path.abspath(pattern)
    raise FileNotFoundError(f"HFDataLoader {key}: '{data_files}' does not exist (no local file matches)")


def _flat(data_files) -> List[str]:
    if data_files is None:
        return []
    if isinstance(data_files, dict):
        return [f for v in data_files.values() for f in _flat(v)]
    return list(data_files) if isinstance(data_files, list) else [data_files]


def load_local(path: Optional[str], data_files, split: str, name: Optional[str], data_dir: Optional[str],
               cache_dir: Optional[str]):
    """`datasets.load_dataset` on local files only; a Hub id fails at once with what to do instead."""
    try:
        import datasets
    except ImportError:
        raise ImportError("HFDataLoader needs the Hugging Face datasets library: pip install datasets") from None
    if path is None and data_files is None:
        raise ValueError("HFDataLoader needs path (json, parquet, arrow, csv, text, or a local file or directory) "
                         "and/or data_files")
    if data_files is not None:
        data_files = _local_files(data_files)
    builder = path
    if path is None or path not in set(_BUILDERS.values()) | {"jsonl"}:
        local = _local(path) if path is not None else None
        if path is not None and local is None:
            raise ValueError(f"HFDataLoader path '{path}' is not a local file or directory: Hugging Face Hub "
                             f"datasets are not available offline here; download it and set path to the local "
                             f"directory (or path: json with data_files: <local file>)")
        if local and os.path.isfile(local):
            ext = os.path.splitext(local)[1].lower()
            if ext not in _BUILDERS or data_files is not None:
                raise ValueError(f"HFDataLoader path '{path}' is a file: it must end in one of "
                                 f"{', '.join(_BUILDERS)} and data_files must be unset")
            builder, data_files = _BUILDERS[ext], local
        elif local:
            builder = local
        else:   # data_files only: the builder from the first file's extension
            first = next(iter(data_files.values())) if isinstance(data_files, dict) else data_files
            first = first[0] if isinstance(first, list) else first
            builder = _BUILDERS.get(os.path.splitext(first)[1].lower())
            if builder is None:
                raise ValueError(f"HFDataLoader data_files '{first}': set path to the builder (one of "
                                 f"{', '.join(sorted(set(_BUILDERS.values())))})")
    elif data_files is None and data_dir is None:
        raise ValueError(f"HFDataLoader path: {path} needs data_files (or data_dir): the local file(s) to read")
    if builder == "jsonl":
        builder = "json"
    if builder in _BUILDERS.values():
        for file in _flat(data_files):
            kind = _BUILDERS.get(os.path.splitext(file)[1].lower())
            if kind not in (None, builder):
                raise ValueError(f"HFDataLoader data_files '{file}' is {kind} but path is '{path}' (set path: {kind})")
    if data_dir is not None:
        data_dir = _local(data_dir) or _local_files(data_dir, "data_dir")
    if builder in ("json", "csv", "text"):  # arrow keeps bad bytes, and a record would fail later without a file
        for file in sorted({f for pattern in _flat(data_files) for f in glob.glob(str(pattern))}):
            check_utf8(file)
    try:
        loaded = datasets.load_dataset(builder, name=name, data_dir=data_dir, data_files=data_files, split=split,
                                       cache_dir=cache_dir)
    except (datasets.exceptions.DatasetGenerationError, ValueError) as err:   # the parser's message is the useful part
        cause = str(err.__cause__ or err).splitlines()[0]
        raise ValueError(f"HFDataLoader could not read {data_files or builder} as {builder} (split {split!r}): "
                         f"{cause}") from None
    if not isinstance(loaded, datasets.Dataset):
        raise ValueError(f"HFDataLoader split: {split!r} did not select one split (got {list(loaded)})")
    return loaded


def truncate_samples(samples: List[tuple], length: int, pad_id: int) -> List[tuple]:
    """Upstream's pack_strategy 'truncate': all samples' real tokens back to back, cut into rows of `length`
    (the last row padded); positions restart at each sample and at each row start (a cut sample continues
    as its own segment in the next row)."""
    ids, labels, positions = [], [], []
    for sample_ids, sample_labels in samples:
        labelled = np.flatnonzero(sample_labels != IGNORE)
        n = int(labelled[-1]) + 1 if labelled.size else 0
        ids.append(sample_ids[:n])
        labels.append(sample_labels[:n])
        positions.append(np.arange(n))
    ids, labels, positions = (np.concatenate(a).astype(np.int32) for a in (ids, labels, positions))
    rows = []
    for start in range(0, len(ids), length):
        used = min(length, len(ids) - start)
        row_ids = np.full(length, pad_id, np.int32)
        row_labels = np.full(length, IGNORE, np.int32)
        row_ids[:used], row_labels[:used] = ids[start:start + used], labels[start:start + used]
        # a segment starts at the row start, at each sample start, and at the padding tail
        begins = np.zeros(length, dtype=bool)
        begins[:used] = positions[start:start + used] == 0
        begins[0] = True
        if used < length:
            begins[used] = True
        steps = np.arange(length)
        rows.append((row_ids, row_labels, (steps - np.maximum.accumulate(np.where(begins, steps, 0))).astype(np.int32)))
    return rows


@MindFormerRegister.register(MindFormerModuleType.DATASET_LOADER)
class HFDataLoader:
    """Upstream's HFDataLoader on local files: rows through `handler` (in order), then (packed) samples."""

    def __init__(self, path: Optional[str] = None, data_files=None, split: str = "train", name: Optional[str] = None,
                 data_dir: Optional[str] = None, cache_dir: Optional[str] = None, load_func: str = "load_dataset",
                 handler: Optional[list] = None, shuffle: bool = False, create_attention_mask: bool = False,
                 create_compressed_eod_mask: bool = False, compressed_eod_mask_length: int = 128,
                 use_broadcast_data: Optional[bool] = None, column_names: Optional[List[str]] = None,
                 tokenizer=None, seq_length: Optional[int] = None, seed: int = 0):
        if load_func != "load_dataset":
            raise ValueError(f"HFDataLoader load_func: '{load_func}' is not supported (load_dataset)")
        if tokenizer is None:
            raise ValueError("HFDataLoader needs a tokenizer (set processor.tokenizer in the config)")
        if hasattr(tokenizer, "keys"):
            tokenizer = build_from_config(tokenizer, MindFormerModuleType.TOKENIZER)
        if isinstance(compressed_eod_mask_length, bool) or not isinstance(compressed_eod_mask_length, int) \
                or compressed_eod_mask_length < 1:
            raise ValueError(f"HFDataLoader compressed_eod_mask_length must be a positive int, got "
                             f"{compressed_eod_mask_length!r}")
        steps = [handler] if hasattr(handler, "keys") else list(handler or [])
        packing = [i for i, h in enumerate(steps) if hasattr(h, "get") and h.get("type") == "PackingHandler"]
        for key, value in (("create_attention_mask", create_attention_mask),
                           ("create_compressed_eod_mask", create_compressed_eod_mask)):
            if value:   # upstream turns these on only for packed rows; the mask is the same one the model builds
                if not packing:
                    raise ValueError(f"HFDataLoader {key}: True needs a PackingHandler in handler (it masks "
                                     f"attention between packed samples)")
                log_no_effect(key, "the model builds the same block-diagonal mask from position_ids")
        if use_broadcast_data is not None:
            log_no_effect("use_broadcast_data", "every rank builds the data and reads its own shard")
        self.shuffle, self.seed = bool(shuffle), int(seed)
        source = str(data_files if data_files is not None else path)
        self.dataset_dir = source
        rows = load_local(path, data_files, split, name, data_dir, cache_dir)
        self.seq_length = seq_length
        samples, encoder = rows, None
        for i, step in enumerate(steps):
            if not hasattr(step, "keys") or "type" not in step:
                raise ValueError(f"HFDataLoader handler[{i}] must be a mapping with a type, got {step!r}")
            step = dict(step)
            kind = step.pop("type")
            where = f"HFDataLoader handler[{i}] ({kind})"
            if kind in _DATASET_METHODS:
                samples = self._dataset_method(samples, kind, step, where)
            elif kind == "PackingHandler":
                samples = self._pack(samples, step, encoder, tokenizer, where, len(packing))
            else:
                if encoder is not None:
                    raise ValueError(f"{where}: only one encoding handler per loader ({encoder} is already one)")
                samples = self._encode(samples, kind, step, tokenizer, where, bool(packing and packing[0] > i),
                                       source)
                encoder = kind
        if encoder is None:
            raise ValueError("HFDataLoader handler needs an encoding handler (AlpacaInstructDataHandler, "
                             "SharegptDataHandler) that turns rows into input_ids and labels")
        if not samples:
            raise ValueError(f"HFDataLoader: no sample left after the handlers: {self.data_summary}")
        natural = list(SERVED_COLUMNS if packing else SERVED_COLUMNS[:2])
        self.column_names = pick_columns(column_names, natural, natural, "HFDataLoader")
        self.samples = samples

    def _dataset_method(self, samples, kind: str, args: dict, where: str):
        if isinstance(samples, list):   # encoded (or packed) rows: only counting methods still apply
            if kind not in ("take", "skip") or set(args) != {"n"}:
                raise ValueError(f"{where} after the encoding handler: only take/skip with n apply to encoded "
                                 f"rows; put {kind} before it")
            n = args["n"]
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ValueError(f"{where}.n must be a non-negative int, got {n!r}")
            return samples[:n] if kind == "take" else samples[n:]
        if kind in ("take", "skip") and isinstance(args.get("n"), int) and args["n"] > len(samples):
            # like a slice (and upstream's intent): take n of fewer rows keeps them all, skip n drops them all
            logger.info("%s: n=%d but the data has %d rows", where, args["n"], len(samples))
            args = {**args, "n": len(samples)}
        try:
            return getattr(samples, kind)(**args)
        except (TypeError, ValueError, KeyError, IndexError) as err:
            raise ValueError(f"{where}: {err}") from None

    def _encode(self, rows, kind: str, cfg: dict, tokenizer, where: str, packed_later: bool, source: str):
        section = cfg.pop("tokenizer", None) or {}
        unknown = [k for k in section if k not in _HANDLER_TOKENIZER_KEYS]
        if unknown:
            raise ValueError(f"{where}.tokenizer.{unknown[0]}: a handler uses the run's tokenizer "
                             f"(processor.tokenizer); here it may only set {', '.join(_HANDLER_TOKENIZER_KEYS)}")
        if not isinstance(section.get("trust_remote_code", False), bool):
            raise ValueError(f"{where}.tokenizer.trust_remote_code must be a bool (the run's tokenizer runs no "
                             f"remote code either way)")
        if section.get("padding_side", "right") != "right":
            raise ValueError(f"{where}.tokenizer.padding_side: '{section['padding_side']}' is not supported: "
                             f"training rows are padded on the right (right)")
        cfg["seq_length"] = self._check_length(cfg.get("seq_length"), where)
        if cfg.get("padding", True) is False and packed_later:
            cfg.pop("padding")   # packing keeps only each sample's real tokens, as unpadded rows would be
        cfg["type"] = kind
        encoder = build_from_config(cfg, MindFormerModuleType.DATA_HANDLER, tokenizer=tokenizer)
        if not hasattr(encoder, "encode"):
            raise ValueError(f"{where}: {kind} is not a row handler (it has no encode(row, where))")
        samples, read = [], 0
        for read, row in enumerate(rows, 1):
            sample = encoder.encode(row, f"{source}: row {read}")
            if sample is None:
                continue
            if len(sample) != 2:
                raise ValueError(f"{where} gives {len(sample)} columns; HFDataLoader serves (input_ids, labels) "
                                 f"rows (use CommonDataLoader for preference pairs)")
            samples.append(sample)
        dropped, truncated = dict(getattr(encoder, "dropped", {})), int(getattr(encoder, "truncated", 0))
        reasons = "; ".join(f"{n} {reason}" for reason, n in dropped.items())
        self.data_summary = (f"{read} examples read from {source}, {sum(dropped.values())} dropped" +
                             (f" ({reasons})" if reasons else "") + f", {truncated} truncated, {len(samples)} kept")
        if truncated or dropped:
            logger.warning("HFDataLoader: %s (longer than seq_length + 1 = %d tokens: truncated or dropped per the "
                           "handler's truncation)", self.data_summary, self.seq_length + 1)
        return samples

    def _pack(self, samples, cfg: dict, encoder, tokenizer, where: str, count: int):
        if count > 1:
            raise ValueError(f"{where}: only one PackingHandler per loader")
        if encoder is None:
            raise ValueError(f"{where} packs encoded rows: put it after the encoding handler "
                             f"(e.g. AlpacaInstructDataHandler)")
        unknown = [k for k in cfg if k not in ("seq_length", "pack_strategy")]
        if unknown:
            raise ValueError(f"{where} got an unknown argument '{unknown[0]}': accepted: seq_length, pack_strategy")
        length = self._check_length(cfg.get("seq_length"), where) + 1
        strategy = cfg.get("pack_strategy", "pack")
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        if strategy == "pack":
            packed = pack_samples(samples, length, pad_id)
        elif strategy == "truncate":
            packed = truncate_samples(samples, length, pad_id)
        else:
            raise ValueError(f"{where}.pack_strategy must be 'pack' or 'truncate', got {strategy!r}")
        logger.info("HFDataLoader %s: packed %d samples into %d rows (%s)", self.dataset_dir, len(samples),
                    len(packed), strategy)
        self.data_summary += f", packed into {len(packed)} rows"
        return packed

    def _check_length(self, value, where: str) -> int:
        """A handler's seq_length: the run's when unset, else it must equal it."""
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{where}.seq_length must be a positive int, got {value!r}")
        if value is not None and self.seq_length is not None and value != self.seq_length:
            raise ValueError(f"{where}.seq_length {value} differs from the model's seq_length {self.seq_length}")
        self.seq_length = self.seq_length or value
        if self.seq_length is None:
            raise ValueError(f"{where} needs seq_length (or the model's seq_length)")
        return self.seq_length

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        if len(sample) == 2:   # unpacked: one sample per row, positions 0..S
            sample = (*sample, np.arange(len(sample[0]), dtype=np.int32))
        return tuple(sample[SERVED_COLUMNS.index(c)].copy() for c in self.column_names)

    def epoch_order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.samples))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.samples))
