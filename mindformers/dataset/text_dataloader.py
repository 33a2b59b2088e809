"""Pretraining text source (plain text or JSON lines): tokenize documents once, cache the tokens, serve samples."""
import glob
import hashlib
import json
import logging
import os
from itertools import chain
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from mindformers.tools.paths import resolve_repo_path
from mindformers.tools.textfile import not_utf8
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
    """Random-access source of `seq_length + 1`-token samples cut from a tokenized corpus.

    `dataset_dir` is a file or a directory of files matching `file_pattern` (one glob or a list). In a text
    file a document is a block separated by blank lines; in a `.jsonl`/`.json` file every line is a JSON
    object and the string under each of `json_keys` (Megatron's name, default ["text"]) is one document.
    Each document is tokenized with the tokenizer's own bos handling, `eos` is appended, and the documents
    are concatenated in file order and cut into samples; the remainder is dropped.
    `__getitem__(i)` is sample i in corpus order; `epoch_order(epoch)` is the order to read them in
    (a seeded permutation per epoch when `shuffle`).
    """

    def __init__(self, dataset_dir: str, tokenizer, seq_length: int, shuffle: bool = False, seed: int = 0,
                 add_eos: bool = True, file_pattern: Union[str, Sequence[str]] = "*.txt",
                 json_keys: Optional[Sequence[str]] = None):
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
        self.json_keys = _check_json_keys(json_keys, self.files, dataset_dir)
        tokens = _load_tokens(self.files, tokenizer, add_eos, self.json_keys)
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


def _is_json(path: str) -> bool:
    return path.endswith((".jsonl", ".json"))


def _list_files(dataset_dir: str, file_pattern: Union[str, Sequence[str]]) -> List[str]:
    path = resolve_repo_path(dataset_dir, "TextDataLoader dataset_dir")
    if os.path.isfile(path):
        return [path]
    patterns = [file_pattern] if isinstance(file_pattern, str) else file_pattern
    if not isinstance(patterns, (list, tuple)) or not patterns or \
            not all(isinstance(p, str) and p for p in patterns):
        raise ValueError(f"TextDataLoader file_pattern: a glob such as '*.txt' or a list of globs such as "
                         f"['*.txt', '*.jsonl'], got {file_pattern!r}")
    files = sorted({f for p in patterns for f in glob.glob(os.path.join(path, p), recursive=True)
                    if os.path.isfile(f)})
    if not files:
        found = sorted({os.path.splitext(f)[1] for f in glob.glob(os.path.join(path, "**"), recursive=True)
                        if os.path.isfile(f)} - {""})
        raise FileNotFoundError(f"TextDataLoader dataset_dir {path} has no files matching {file_pattern!r}" +
                                (f" (it has {', '.join(found)} files: set file_pattern, e.g. '*{found[0]}')"
                                 if found else ""))
    return files


def _check_json_keys(json_keys, files: List[str], dataset_dir: str) -> List[str]:
    """The JSON fields to read documents from; naming them for a corpus with no JSON file is an error."""
    if json_keys is None:
        return ["text"]
    keys = [json_keys] if isinstance(json_keys, str) else json_keys
    if not isinstance(keys, (list, tuple)) or not keys or not all(isinstance(k, str) and k for k in keys):
        raise ValueError(f"TextDataLoader json_keys: a list of JSON field names such as ['text'], got {json_keys!r}")
    if not any(map(_is_json, files)):
        raise ValueError(f"TextDataLoader json_keys: applies to .jsonl/.json files, and {dataset_dir} gives only "
                         f"plain-text files")
    return list(keys)


def _json_documents(path: str, text: str, keys: List[str]) -> List[str]:
    """The documents of a JSON-lines file: the string under each of `keys`, line by line, in key order."""
    docs = []
    # split on "\n" only: splitlines() would also cut at U+2028 and friends, which JSON strings may hold raw
    for line_no, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"TextDataLoader: {path}:{line_no}: not valid JSON ({err.msg}); each line must be one "
                             f"JSON object (JSON lines)") from None
        if not isinstance(obj, dict):
            raise ValueError(f"TextDataLoader: {path}:{line_no}: a JSON {type(obj).__name__}, not an object with "
                             f"the json_keys {keys}; each line must be one JSON object (JSON lines)")
        for key in keys:
            if key not in obj:
                raise ValueError(f"TextDataLoader json_keys: {path}:{line_no} has no key '{key}' (its keys: "
                                 f"{', '.join(map(repr, obj)) or 'none'})")
            if not isinstance(obj[key], str):
                raise ValueError(f"TextDataLoader json_keys: {path}:{line_no} key '{key}' holds a "
                                 f"{type(obj[key]).__name__}, not a string")
            if obj[key].strip():   # an empty text is no document, as in Megatron's preprocessing
                docs.append(obj[key])
    return docs


def _load_tokens(files: List[str], tokenizer, add_eos: bool, json_keys: List[str]) -> np.ndarray:
    """All documents of `files` as one int32 token array, from the cache when its key matches."""
    contents = []
    for path in files:
        with open(path, "rb") as f:
            contents.append(f.read())
    key = hashlib.sha256(_CACHE_FORMAT)
    for data in contents:
        key.update(len(data).to_bytes(8, "little"))
        key.update(data)
    kinds = "".join("j" if _is_json(path) else "t" for path in files)   # how each file is read
    key.update(f"{tokenizer.fingerprint()}|add_eos={add_eos}|json_keys={json.dumps(json_keys)}|{kinds}".encode())
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
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"TextDataLoader: {not_utf8(path, data, err)}") from None
        file_docs = _json_documents(path, text, json_keys) if _is_json(path) else split_documents(text)
        if not file_docs:
            raise ValueError(f"TextDataLoader: {path} is empty (no non-blank " +
                             (f"{json_keys} text)" if _is_json(path) else "lines)"))
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
