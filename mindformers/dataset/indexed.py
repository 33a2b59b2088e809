"""Megatron-style indexed token files: `<prefix>.bin` (token ids back to back) + `<prefix>.idx` (the index).

The layout is Megatron-LM's "MMIDIDX" one, so files made by Megatron/MindSpeed/upstream preprocessing load here and
ours load there. The .idx holds, little-endian:

    magic b"MMIDIDX\\x00\\x00" | version u64 = 1 | dtype code u8 | sequence count u64 | document count u64
    sequence lengths i32[sequences] | sequence byte offsets i64[sequences] | document starts i64[documents]

We write one sequence per document, so the document starts are 0, 1, ..., n. The .bin is memory-mapped: a corpus
larger than RAM is read a sample at a time.
"""
import os
import struct
from typing import Iterable, Optional, Tuple

import numpy as np

from mindformers.tools.paths import REPO_ROOT
from mindformers.tools.register import MindFormerModuleType, MindFormerRegister

_MAGIC = b"MMIDIDX\x00\x00"
_VERSION = 1
_DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.float32,
           8: np.uint16}
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}


def token_dtype(vocab_size: int) -> np.dtype:
    """The narrowest dtype that holds every id: uint16 below 65,500 ids (as Megatron picks), else int32."""
    return np.dtype(np.uint16 if vocab_size < 65500 else np.int32)


class IndexedDatasetWriter:
    """Streams documents into `<prefix>.bin`; `finalize()` writes `<prefix>.idx`. Use as a context manager.

    Only the per-document lengths stay in memory (4 bytes each), so the input can be larger than RAM. The files
    appear under their final names only when complete (written as `.tmp` and renamed).
    """

    def __init__(self, prefix: str, dtype: np.dtype):
        self.prefix, self.dtype = prefix, np.dtype(dtype)
        if self.dtype not in _CODES:
            raise ValueError(f"indexed dataset dtype {self.dtype} is not one of {sorted(map(str, _CODES))}")
        os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
        self._bin = open(f"{prefix}.bin.tmp", "wb")  # pylint: disable=consider-using-with
        self._lengths = []
        self.num_tokens = 0

    def add_document(self, ids: Iterable[int]) -> None:
        arr = np.asarray(ids)
        self.add_documents(arr, [arr.size])

    def add_documents(self, ids: np.ndarray, lengths: Iterable[int]) -> None:
        """Several documents at once: their ids back to back and each one's length."""
        arr = np.asarray(ids)
        lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
        if int(lengths.sum()) != arr.size:
            raise ValueError(f"{self.prefix}.bin: {arr.size} ids given for documents of {int(lengths.sum())} tokens")
        if arr.size and (arr.min() < np.iinfo(self.dtype).min or arr.max() > np.iinfo(self.dtype).max):
            bad = int(arr.max()) if arr.max() > np.iinfo(self.dtype).max else int(arr.min())
            raise ValueError(f"{self.prefix}.bin: token id {bad} does not fit {self.dtype}; the tokenizer "
                             f"and the dtype disagree on the vocabulary size")
        self._bin.write(arr.astype(self.dtype, copy=False).tobytes())
        self._lengths.append(lengths)
        self.num_tokens += arr.size

    def finalize(self) -> None:
        self._bin.close()
        lengths = np.concatenate(self._lengths).astype(np.int32) if self._lengths else np.zeros(0, np.int32)
        offsets = np.zeros(len(lengths), dtype=np.int64)
        np.cumsum(lengths[:-1].astype(np.int64) * self.dtype.itemsize, out=offsets[1:])
        doc_starts = np.arange(len(lengths) + 1, dtype=np.int64)
        with open(f"{self.prefix}.idx.tmp", "wb") as f:
            f.write(_MAGIC + struct.pack("<QBQQ", _VERSION, _CODES[self.dtype], len(lengths), len(doc_starts)))
            f.write(lengths.tobytes() + offsets.tobytes() + doc_starts.tobytes())
        os.replace(f"{self.prefix}.bin.tmp", f"{self.prefix}.bin")
        os.replace(f"{self.prefix}.idx.tmp", f"{self.prefix}.idx")

    def abort(self) -> None:
        self._bin.close()
        for suffix in (".bin.tmp", ".idx.tmp"):
            if os.path.exists(self.prefix + suffix):
                os.remove(self.prefix + suffix)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.finalize()
        else:
            self.abort()


class IndexedDataset:
    """Read side: `len()` documents, `[i]` the token ids of document i, `tokens` the whole memory-mapped stream."""

    def __init__(self, prefix: str):
        prefix = prefix[:-4] if prefix.endswith((".bin", ".idx")) else prefix
        self.prefix = prefix
        idx_path, bin_path = f"{prefix}.idx", f"{prefix}.bin"
        for path in (idx_path, bin_path):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"indexed dataset {prefix}: {path} does not exist (make the pair with "
                                        f"`python -m mindformers.tools.preprocess_data`)")
        with open(idx_path, "rb") as f:
            header = f.read(len(_MAGIC) + struct.calcsize("<QBQQ"))
        if len(header) < len(_MAGIC) + 25 or header[:len(_MAGIC)] != _MAGIC:
            raise ValueError(f"{idx_path} is not a Megatron MMIDIDX index (bad magic bytes)")
        version, code, n_seq, n_doc = struct.unpack("<QBQQ", header[len(_MAGIC):])
        if version != _VERSION or code not in _DTYPES:
            raise ValueError(f"{idx_path}: unsupported index version {version} or dtype code {code}; "
                             f"valid: version 1, dtype codes {sorted(_DTYPES)}")
        offset = len(header)
        expected = offset + n_seq * 12 + n_doc * 8
        if os.path.getsize(idx_path) != expected:
            raise ValueError(f"{idx_path} is truncated or corrupt: {os.path.getsize(idx_path)} bytes, the header "
                             f"announces {n_seq} sequences and {n_doc} document starts ({expected} bytes)")
        index = np.memmap(idx_path, mode="r", dtype=np.uint8)
        self.lengths = np.frombuffer(index, np.int32, n_seq, offset)
        self.offsets = np.frombuffer(index, np.int64, n_seq, offset + n_seq * 4)
        self.doc_starts = np.frombuffer(index, np.int64, n_doc, offset + n_seq * 12)
        self.dtype = np.dtype(_DTYPES[code])
        total = int(self.lengths.sum(dtype=np.int64))
        if os.path.getsize(bin_path) != total * self.dtype.itemsize:
            raise ValueError(f"{bin_path} has {os.path.getsize(bin_path)} bytes but {idx_path} lists {total} "
                             f"tokens of {self.dtype} ({total * self.dtype.itemsize} bytes); the pair does not match")
        self.tokens = np.memmap(bin_path, mode="r", dtype=self.dtype) if total else np.zeros(0, self.dtype)

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> np.ndarray:
        start = int(self.offsets[i]) // self.dtype.itemsize
        return np.asarray(self.tokens[start:start + int(self.lengths[i])])


def reset_positions(ids: np.ndarray, eod_token_id: int) -> np.ndarray:
    """Position ids that restart at 0 after every EOD token (for packed documents), int32 like `ids`."""
    n = len(ids)
    start = np.zeros(n, dtype=bool)
    start[0] = True
    start[1:] = ids[:-1] == eod_token_id
    begin = np.maximum.accumulate(np.where(start, np.arange(n), 0))
    return (np.arange(n) - begin).astype(np.int32)


@MindFormerRegister.register(MindFormerModuleType.DATASET_LOADER)
class IndexedDataLoader:
    """Pretraining samples of `seq_length + 1` tokens cut from an indexed dataset's token stream (documents are
    concatenated in file order, each already ending in EOD if it was written so; the remainder is dropped).

    `data_path` is the file prefix (without .bin/.idx). Shuffling is a permutation seeded by (seed, epoch).
    """

    def __init__(self, data_path: str, seq_length: int, shuffle: bool = False, seed: int = 0,
                 dataset_dir: Optional[str] = None):
        path = data_path or dataset_dir
        if not path:
            raise ValueError("IndexedDataLoader needs data_path: the prefix of a .bin/.idx pair")
        if not isinstance(seq_length, int) or seq_length < 1:
            raise ValueError(f"IndexedDataLoader seq_length must be a positive int, got {seq_length!r}")
        path = path[:-4] if path.endswith((".bin", ".idx")) else path
        if not os.path.isabs(path) and os.path.exists(os.path.join(REPO_ROOT, f"{path}.idx")) \
                and not os.path.exists(f"{path}.idx"):
            path = os.path.join(REPO_ROOT, path)   # a repo-relative prefix, as other dataset paths may be
        self.dataset_dir = path
        self.data = IndexedDataset(self.dataset_dir)
        self.seq_length, self.shuffle, self.seed = seq_length, bool(shuffle), int(seed)
        self.num_tokens = len(self.data.tokens)
        self._n = self.num_tokens // (seq_length + 1)
        if self._n == 0:
            raise ValueError(f"IndexedDataLoader {self.dataset_dir}: {self.num_tokens} tokens, but one sample "
                             f"(seq_length + 1) needs {seq_length + 1}")

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> Tuple[np.ndarray]:
        n = self.seq_length + 1
        return (np.asarray(self.data.tokens[index * n:(index + 1) * n], dtype=np.int32),)

    def max_token_id(self) -> int:
        """Largest id in the stream (one pass over the memory map, in 64M-token slices)."""
        step = 1 << 26
        return max(int(self.data.tokens[i:i + step].max()) for i in range(0, self.num_tokens, step))

    def epoch_order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self._n)
        return np.random.default_rng([self.seed, epoch]).permutation(self._n)
