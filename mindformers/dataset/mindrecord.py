"""MindRecord datasets (MindSpore's own record format), as upstream pretraining data is often shipped.

`MindDataset` (upstream's data_loader name) reads the records' columns once into flat numpy arrays and serves them
through the same sampler as every other loader (deterministic, resumable, sharded by rank). MindSpore's own
`MindDataset` cannot take that sampler, hence the read. For corpora larger than memory use the memory-mapped
indexed format (`IndexedDataLoader`) instead.
"""
import glob
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np

from mindformers.tools.paths import resolve_repo_path
from mindformers.tools.register import MindFormerModuleType, MindFormerRegister


def write_mindrecord(path: str, samples, columns: Sequence[str] = ("input_ids",), shard_num: int = 1) -> int:
    """Write an iterable of per-sample tuples of int arrays (one per column) as MindRecord; returns the count."""
    from mindspore.mindrecord import FileWriter

    writer = FileWriter(path, shard_num=shard_num, overwrite=True)
    writer.add_schema({c: {"type": "int32", "shape": [-1]} for c in columns}, "mindformers")
    count, chunk = 0, []
    for sample in samples:
        chunk.append({c: np.asarray(a, dtype=np.int32) for c, a in zip(columns, sample)})
        if len(chunk) == 1024:
            writer.write_raw_data(chunk)
            count, chunk = count + len(chunk), []
    if chunk:
        writer.write_raw_data(chunk)
        count += len(chunk)
    writer.commit()
    return count


def _files(dataset_dir: Optional[str], dataset_files: Optional[List[str]]) -> List[str]:
    if dataset_files:
        return [resolve_repo_path(f, "MindDataset dataset_files") for f in dataset_files]
    if not dataset_dir:
        raise ValueError("MindDataset needs dataset_dir (a .mindrecord file or a directory of them) or "
                         "dataset_files")
    path = resolve_repo_path(dataset_dir, "MindDataset dataset_dir")
    if os.path.isfile(path):
        return [path]
    # A sharded write makes name.mindrecord0, name.mindrecord1, ... each with a .db index beside it.
    files = sorted(f for f in glob.glob(os.path.join(path, "*.mindrecord*")) if not f.endswith(".db"))
    if not files:
        raise FileNotFoundError(f"MindDataset dataset_dir {path} has no *.mindrecord files")
    return files


@MindFormerRegister.register(MindFormerModuleType.DATASET_LOADER)
class MindDataset:
    """Samples of MindRecord files: `columns` (default input_ids) as int32 arrays of `seq_length + 1` tokens."""

    def __init__(self, dataset_dir: Optional[str] = None, dataset_files: Optional[List[str]] = None,
                 seq_length: Optional[int] = None, columns: Sequence[str] = ("input_ids",), shuffle: bool = False,
                 seed: int = 0):
        from mindspore.mindrecord import FileReader

        self.files = _files(dataset_dir, dataset_files)
        self.dataset_dir = dataset_dir or self.files[0]
        self.columns, self.shuffle, self.seed = list(columns), bool(shuffle), int(seed)
        self.seq_length = seq_length
        values = {c: [] for c in self.columns}
        # A sharded set is opened through its first file, which lists its siblings; read each set once.
        for path in self._set_heads():
            try:
                reader = FileReader(path, columns=self.columns)
            except Exception as err:  # MindSpore raises RuntimeError/ParamValueError with long C++ text
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise ValueError(f"MindDataset: {path} is not a readable MindRecord file with columns "
                                 f"{self.columns} ({first})") from None
            for record_no, record in enumerate(reader.get_next()):
                for c in self.columns:
                    arr = np.asarray(record[c]).reshape(-1)
                    if seq_length is not None and c == "input_ids" and arr.size != seq_length + 1:
                        reader.close()
                        raise ValueError(f"MindDataset: {path} record {record_no} has {arr.size} input_ids; "
                                         f"seq_length {seq_length} needs {seq_length + 1} (rebuild the records "
                                         f"with --seq-length {seq_length} or change model_config.seq_length)")
                    values[c].append(arr.astype(np.int32))
            reader.close()
        self._n = len(values[self.columns[0]])
        if self._n == 0:
            raise ValueError(f"MindDataset {self.dataset_dir}: no records")
        self._data = {c: np.stack(v) if len({a.size for a in v}) == 1 else v for c, v in values.items()}

    def _set_heads(self) -> List[str]:
        heads, seen = [], set()
        for f in self.files:
            stem = f.rstrip("0123456789")
            if stem not in seen or f == stem:
                seen.add(stem)
                heads.append(f)
        return heads

    def max_token_id(self) -> int:
        ids = self._data[self.columns[0]]
        return int(ids.max()) if isinstance(ids, np.ndarray) else max(int(a.max()) for a in ids if a.size)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> Tuple[np.ndarray, ...]:
        return tuple(np.array(self._data[c][index]) for c in self.columns)

    def epoch_order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self._n)
        return np.random.default_rng([self.seed, epoch]).permutation(self._n)
