"""Plain-text pretraining source: tokenize documents once, cache the tokens, serve fixed-length samples."""
import glob
import hashlib
import logging
import os
from itertools import chain
from typing import List, Tuple

import numpy as np

from mindformers.tools.paths import resolve_repo_path
from mindformers.tools.register import MindFormerModuleType, MindFormerRegister, build_from_config

logger = logging.getLogger(__name__)
_CACHE_FORMAT = b"mindformers-text-tokens-v1"   # bump when the token layout changes


def cache_dir() -> str:
    """Where tokenized corpora are cached: $MF_CACHE_DIR, else ~/.cache/mindformers."""
    return os.environ.get("MF_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "mindformers")


def split_documents(text: str) -> List[str]:
    """Documents of a text file: blocks separated by one or more blank lines."""
    docs, block = [], []
    for line in text.splitlines():
        if line.strip():
            block.append(line)
        elif block:
            docs.append("\n".join(block))
            block = []
    if block:
        docs.append("\n".join(block))
    return docs


@MindFormerRegister.register(MindFormerModuleType.DATASET_LOADER)
class TextDataLoader:
    """Random-access source of `seq_length + 1`-token samples cut from a tokenized plain-text corpus.

    `dataset_dir` is a text file or a directory of files matching `file_pattern`. Each document (a block
    separated by blank lines) is tokenized with the tokenizer's own bos handling, `eos` is appended, and
    the documents are concatenated in file order and cut into samples; the remainder is dropped.
    `__getitem__(i)` is sample i in corpus order; `epoch_order(epoch)` is the order to read them in
    (a seeded permutation per epoch when `shuffle`).
    """

    def __init__(self, dataset_dir: str, tokenizer, seq_length: int, shuffle: bool = False, seed: int = 0,
                 add_eos: bool = True, file_pattern: str = "*.txt"):
        if tokenizer is None:
            raise ValueError("TextDataLoader needs a tokenizer (set processor.tokenizer in the config)")
        if hasattr(tokenizer, "keys"):   # a tokenizer config such as {type: LlamaTokenizer, vocab_file: ...}
            tokenizer = build_from_config(tokenizer, MindFormerModuleType.TOKENIZER)
        if not isinstance(seq_length, int) or seq_length < 1:
            raise ValueError(f"TextDataLoader seq_length must be a positive int, got {seq_length!r}")
        if add_eos and tokenizer.eos_token_id is None:
            raise ValueError("TextDataLoader add_eos=True needs a tokenizer with an eos_token")
        self.dataset_dir = dataset_dir
        self.seq_length = seq_length
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.files = _list_files(dataset_dir, file_pattern)
        tokens = _load_tokens(self.files, tokenizer, add_eos)
        sample_length = seq_length + 1
        num_samples = len(tokens) // sample_length
        if num_samples == 0:
            raise ValueError(f"TextDataLoader {dataset_dir}: the corpus has {len(tokens)} tokens, but one sample "
                             f"(seq_length + 1) needs {sample_length}")
        self.num_tokens = len(tokens)
        self.samples = tokens[:num_samples * sample_length].reshape(num_samples, sample_length)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Tuple[np.ndarray]:
        return (self.samples[index].copy(),)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Sample indices for one epoch: a permutation seeded by (seed, epoch) if shuffling, else 0..n-1."""
        if not self.shuffle:
            return np.arange(len(self.samples))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.samples))


def _list_files(dataset_dir: str, file_pattern: str) -> List[str]:
    path = resolve_repo_path(dataset_dir, "TextDataLoader dataset_dir")
    if os.path.isfile(path):
        return [path]
    files = sorted(f for f in glob.glob(os.path.join(path, file_pattern), recursive=True) if os.path.isfile(f))
    if not files:
        raise FileNotFoundError(f"TextDataLoader dataset_dir {path} has no files matching '{file_pattern}'")
    return files


def _load_tokens(files: List[str], tokenizer, add_eos: bool) -> np.ndarray:
    """All documents of `files` as one int32 token array, from the cache when its key matches."""
    contents = []
    for path in files:
        with open(path, "rb") as f:
            contents.append(f.read())
    key = hashlib.sha256(_CACHE_FORMAT)
    for data in contents:
        key.update(len(data).to_bytes(8, "little"))
        key.update(data)
    key.update(f"{tokenizer.fingerprint()}|add_eos={add_eos}".encode())
    cache_path = os.path.join(cache_dir(), "text_tokens", key.hexdigest() + ".npy")

    if os.path.exists(cache_path):
        try:
            tokens = np.load(cache_path, allow_pickle=False)
            if tokens.dtype == np.int32 and tokens.ndim == 1 and tokens.size:
                return tokens
        except (OSError, ValueError, EOFError):
            pass
        logger.warning("token cache %s is unreadable; rebuilding it", cache_path)

    docs = []
    for path, data in zip(files, contents):
        try:
            file_docs = split_documents(data.decode("utf-8"))
        except UnicodeDecodeError as err:
            raise ValueError(f"TextDataLoader: {path} is not UTF-8 text ({err.reason} at byte {err.start})") \
                from None
        if not file_docs:
            raise ValueError(f"TextDataLoader: {path} is empty (no non-blank lines)")
        docs.extend(file_docs)
    encoded = tokenizer.encode_batch(docs, add_special_tokens=True)
    if add_eos and not tokenizer.add_eos_token:
        eos = [tokenizer.eos_token_id]
        encoded = [ids + eos for ids in encoded]
    tokens = np.fromiter(chain.from_iterable(encoded), dtype=np.int32, count=sum(map(len, encoded)))
    _save_atomic(cache_path, tokens)
    return tokens


def _save_atomic(path: str, tokens: np.ndarray) -> None:
    # Write to a private temp file and rename, so a concurrent rank or a crash never leaves half a file.
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "wb") as f:
            np.save(f, tokens, allow_pickle=False)
        os.replace(tmp, path)
    except OSError as err:
        logger.warning("could not write token cache %s (%s); continuing without it", path, err.strerror)
        if os.path.exists(tmp):
            os.remove(tmp)
