"""Tokenize a raw corpus once into an indexed dataset (.bin + .idx) or MindRecord, for pretraining.

    python -m mindformers.tools.preprocess_data --input data/ --output-prefix out/corpus \\
        --config configs/llama/pretrain_llama_tiny.yaml [--format indexed|mindrecord] [--workers 2]

Input: plain text (documents separated by blank lines), jsonl (one object per line, text under --json-keys) or
parquet (needs pyarrow), a file or a directory of them. Everything is streamed: documents are read, tokenized in
chunks by --workers workers and appended to the output in input order, so a corpus larger than memory works.
The workers are threads for a Hugging Face `tokenizers` tokenizer (its batch encode runs in Rust without the
GIL, so threads share one tokenizer and no data crosses a process boundary) and forked processes otherwise.
Each document gets the tokenizer's eos appended (EOD) unless --no-append-eod.
"""
import argparse
import collections
import glob
import json
import logging
import multiprocessing as mp
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from itertools import chain, groupby
from typing import Iterator, List, Optional, Tuple, Union

import numpy as np

logger = logging.getLogger(__name__)
_KINDS = {".txt": "text", ".text": "text", ".md": "text", ".jsonl": "jsonl", ".json": "jsonl",
          ".parquet": "parquet"}


class InputError(ValueError):
    """Bad input data, with the file and line it was found at."""


def input_files(path: str) -> List[Tuple[str, str]]:
    """(file, kind) for a file or every supported file under a directory, sorted."""
    if os.path.isfile(path):
        kind = _KINDS.get(os.path.splitext(path)[1].lower())
        if kind is None:
            raise InputError(f"--input {path}: unknown extension; supported: {', '.join(sorted(_KINDS))}")
        return [(path, kind)]
    if not os.path.isdir(path):
        raise InputError(f"--input {path} does not exist")
    files = sorted(f for f in glob.glob(os.path.join(path, "**", "*"), recursive=True)
                   if os.path.isfile(f) and os.path.splitext(f)[1].lower() in _KINDS)
    if not files:
        raise InputError(f"--input {path} has no files with a supported extension ({', '.join(sorted(_KINDS))})")
    return [(f, _KINDS[os.path.splitext(f)[1].lower()]) for f in files]


def _text_documents(path: str) -> Iterator[str]:
    block = []
    with open(path, encoding="utf-8") as f:
        try:
            for line in f:
                if line.strip():
                    block.append(line.rstrip("\n"))
                elif block:
                    yield "\n".join(block)
                    block = []
        except UnicodeDecodeError as err:
            raise InputError(f"{path}: not UTF-8 text ({err.reason})") from None
    if block:
        yield "\n".join(block)


def _json_lines(path: str) -> Iterator[Tuple[str, int, str]]:
    """(path, line number, raw line) of every non-blank line; the workers parse them (see `json_text`)."""
    with open(path, encoding="utf-8") as f:
        try:
            for line_no, line in enumerate(f, 1):
                if line.strip():
                    yield path, line_no, line
        except UnicodeDecodeError as err:
            raise InputError(f"{path}: not UTF-8 text ({err.reason})") from None


def json_text(line: Union[str, dict], keys: List[str]) -> str:
    """The document of one jsonl line (raw or parsed): its `keys` fields joined by newlines; ValueError says
    what is wrong."""
    row = json.loads(line) if isinstance(line, str) else line
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    missing = [k for k in keys if k not in row]
    if missing:
        raise ValueError(f"no key {missing[0]!r} (keys: {', '.join(row)}); choose with --json-keys")
    if not all(isinstance(row[k], str) for k in keys):
        raise ValueError(f"{'/'.join(keys)} must be strings")
    return "\n".join(row[k] for k in keys)


def _parquet_documents(path: str, keys: List[str]) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(f"reading {path} needs pyarrow: pip install pyarrow") from None
    table = pq.ParquetFile(path)
    names = table.schema_arrow.names
    missing = [k for k in keys if k not in names]
    if missing:
        raise InputError(f"{path}: no column {missing[0]!r} (columns: {', '.join(names)}); choose with --json-keys")
    for batch in table.iter_batches(batch_size=1024, columns=keys):
        columns = [batch.column(k).to_pylist() for k in keys]
        for row in zip(*columns):
            yield "\n".join(v or "" for v in row)


def documents(files, keys: List[str]) -> Iterator[Union[str, Tuple[str, int, str]]]:
    """Every document of every input file, in order: its text, or for jsonl the raw line (parsed by a worker)."""
    for path, kind in files:
        if os.path.getsize(path) == 0:
            raise InputError(f"{path} is empty")
        if kind == "text":
            yield from _text_documents(path)
        elif kind == "jsonl":
            yield from _json_lines(path)
        else:
            yield from _parquet_documents(path, keys)


def load_tokenizer(config: Optional[str], tokenizer: Optional[str]):
    """The tokenizer of a YAML config's processor.tokenizer, or of a tokenizer file/directory."""
    from mindformers.tools.register import MindFormerModuleType, build_from_config

    if config:
        from mindformers.config import load_config
        spec = (load_config(config).get("processor") or {}).get("tokenizer")
        if not spec:
            raise InputError(f"--config {config} has no processor.tokenizer")
        return build_from_config(spec, MindFormerModuleType.TOKENIZER)
    if os.path.isdir(tokenizer):
        from mindformers.models.hf.tokenizer import tokenizer_from_hf
        return tokenizer_from_hf(tokenizer)
    if tokenizer.endswith(".model"):
        from mindformers.tokenization import LlamaTokenizer
        return LlamaTokenizer(vocab_file=tokenizer)
    raise InputError(f"--tokenizer {tokenizer}: give a sentencepiece .model file or a Hugging Face directory")


_WORKER = {}


def _init_worker(config, tokenizer_path, append_eod, keys, skip_bad, tokenizer=None):
    _WORKER["tok"] = tokenizer or load_tokenizer(config, tokenizer_path)
    _WORKER["eod"] = [_WORKER["tok"].eos_token_id] if append_eod and not _WORKER["tok"].add_eos_token else []
    _WORKER["keys"], _WORKER["skip_bad"] = keys, skip_bad


def _parse_json_lines(items: list) -> Tuple[List[str], List[str]]:
    """(documents, skipped "file:line"s) of raw jsonl lines; the whole chunk is parsed in one call and only a
    chunk with a bad line is parsed again line by line, to name (or skip) the bad ones."""
    keys = _WORKER["keys"]
    try:
        rows = json.loads("[" + ",".join(line for _, _, line in items) + "]")
        if len(rows) == len(items):  # a line like `1, 2` would parse as two rows: take the slow path
            return [json_text(row, keys) for row in rows], []
    except ValueError:
        pass
    texts, skipped = [], []
    for path, line_no, line in items:
        try:
            texts.append(json_text(line, keys))
        except ValueError as err:
            if not _WORKER["skip_bad"]:
                raise InputError(f"{path}:{line_no}: {err} (use --skip-bad-lines to skip such lines)") from None
            skipped.append(f"{path}:{line_no}")
    return texts, skipped


def _encode_chunk(items: list) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """(all ids of the chunk back to back, per-document lengths, skipped "file:line"s); two arrays pickle far
    faster than many lists. jsonl lines are parsed here, in the worker, so the reading process stays light."""
    tok, eod = _WORKER["tok"], _WORKER["eod"]
    texts, skipped = [], []
    # a chunk may span files of both kinds: text documents as they are, each run of jsonl lines parsed at once
    for is_json, run in groupby(items, key=lambda item: not isinstance(item, str)):
        run = list(run)
        if is_json:
            parsed, bad = _parse_json_lines(run)
            texts += parsed
            skipped += bad
        else:
            texts += run
    encoded = tok.encode_batch(texts, add_special_tokens=True) if texts else []
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    flat = np.fromiter(chain.from_iterable(encoded), dtype=np.int64, count=int(lengths.sum()))
    if eod:  # the EOD after each document, inserted in one vectorized call
        flat = np.insert(flat, np.repeat(np.cumsum(lengths), len(eod)), np.tile(eod, len(lengths)))
        lengths += len(eod)
    return flat, lengths, skipped


def _chunks(items: Iterator[str], size: int) -> Iterator[List[str]]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@contextmanager
def _single_threaded_rust_tokenizer():
    """Each worker thread's batch encode on one core, so --workers threads use --workers cores (the library
    would otherwise spread every batch over all cores, and N threads would oversubscribe the machine)."""
    old = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = old


def _threaded(chunks, workers: int):
    """_encode_chunk over `chunks` in `workers` threads, results in input order, at most 2 per worker in flight
    (a plain Executor.map would read the whole corpus up front)."""
    with ThreadPoolExecutor(workers) as pool, _single_threaded_rust_tokenizer():
        pending = collections.deque()
        for chunk in chunks:
            pending.append(pool.submit(_encode_chunk, chunk))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def encoded_chunks(args, skipped: list, tokenizer) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """(ids back to back, per-document lengths) for each chunk of documents, in input order, tokenized by
    `args.workers` threads or processes (see the module docstring); skipped lines are appended to `skipped`."""
    files = input_files(args.input)
    chunks = _chunks(documents(files, args.json_keys), args.chunk_size)
    init = (args.config, args.tokenizer, args.append_eod, args.json_keys, args.skip_bad_lines)
    pool = None
    if args.workers <= 1 or tokenizer.batch_encode_releases_gil:
        _init_worker(*init, tokenizer=tokenizer)
        results = map(_encode_chunk, chunks) if args.workers <= 1 else _threaded(chunks, args.workers)
    else:
        # fork: the workers inherit the imported modules instead of importing MindSpore again (seconds each);
        # the parent has run no MindSpore op, so there is no runtime state to copy.
        pool = mp.get_context("fork").Pool(args.workers, _init_worker, init)
        results = pool.imap(_encode_chunk, chunks, chunksize=1)
    try:
        for flat, lengths, bad in results:
            skipped.extend(bad)
            yield flat, lengths
    finally:
        if pool is not None:
            pool.terminate()


def _samples(chunks, length: int, stats: dict) -> Iterator[Tuple[np.ndarray]]:
    """Fixed-length samples cut from the concatenated documents (the last partial one is dropped)."""
    buffer = np.zeros(0, dtype=np.int64)
    for flat, _ in chunks:
        buffer = np.concatenate([buffer, flat])
        while len(buffer) >= length:
            yield (buffer[:length],)
            buffer = buffer[length:]
    stats["dropped_tokens"] = len(buffer)


def preprocess(args) -> dict:
    """Run the conversion; returns counts for the summary line."""
    from tqdm import tqdm

    from mindformers.dataset.indexed import IndexedDatasetWriter, token_dtype
    from mindformers.dataset.mindrecord import write_mindrecord

    tokenizer = load_tokenizer(args.config, args.tokenizer)  # fail fast here, before spawning workers
    if args.append_eod and tokenizer.eos_token_id is None:
        raise InputError("the tokenizer has no eos_token to append as EOD; pass --no-append-eod")
    skipped, stats = [], {"documents": 0, "tokens": 0}
    start = time.perf_counter()
    bar = tqdm(desc="documents", unit="doc", disable=args.quiet, mininterval=1.0)

    def counted(chunks):
        for flat, lengths in chunks:
            stats["documents"] += len(lengths)
            stats["tokens"] += len(flat)
            bar.update(len(lengths))
            yield flat, lengths

    chunks = counted(encoded_chunks(args, skipped, tokenizer))
    if args.format == "indexed":
        with IndexedDatasetWriter(args.output_prefix, token_dtype(tokenizer.vocab_size)) as writer:
            for flat, lengths in chunks:
                writer.add_documents(flat, lengths)
        outputs = [f"{args.output_prefix}.bin", f"{args.output_prefix}.idx"]
    else:
        os.makedirs(os.path.dirname(os.path.abspath(args.output_prefix)), exist_ok=True)
        path = f"{args.output_prefix}.mindrecord"
        stats["samples"] = write_mindrecord(path, _samples(chunks, args.seq_length + 1, stats))
        outputs = [path]
    bar.close()
    if stats["documents"] == 0:
        raise InputError(f"--input {args.input}: no documents found")
    stats.update(seconds=time.perf_counter() - start, skipped=len(skipped), outputs=outputs)
    if skipped:
        logger.warning("skipped %d malformed lines: %s%s", len(skipped), ", ".join(skipped[:5]),
                       " ..." if len(skipped) > 5 else "")
    return stats


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mindformers.tools.preprocess_data",
                                description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--input", required=True, help="a .txt/.jsonl/.json/.parquet file or a directory of them")
    p.add_argument("--output-prefix", required=True, help="output path without extension")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="YAML config whose processor.tokenizer to use")
    src.add_argument("--tokenizer", help="a sentencepiece .model file or a Hugging Face tokenizer directory")
    p.add_argument("--format", choices=("indexed", "mindrecord"), default="indexed")
    p.add_argument("--seq-length", type=int, help="mindrecord only: samples hold seq_length + 1 tokens")
    p.add_argument("--json-keys", nargs="+", default=["text"], help="jsonl/parquet fields joined into a document")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="tokenizer threads or processes")
    p.add_argument("--chunk-size", type=int, default=256, help="documents per worker task")
    p.add_argument("--append-eod", action=argparse.BooleanOptionalAction, default=True,
                   help="append the eos token to each document (default on)")
    p.add_argument("--skip-bad-lines", action="store_true", help="skip (and count) malformed jsonl lines")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.format == "mindrecord" and (args.seq_length is None or args.seq_length < 1):
        parser.error("--format mindrecord needs --seq-length N (N >= 1)")
    if args.workers < 1 or args.chunk_size < 1:
        parser.error("--workers and --chunk-size must be >= 1")
    try:
        stats = preprocess(args)
    except (InputError, ValueError, FileNotFoundError) as err:
        print(f"preprocess_data: error: {err}", file=sys.stderr)
        return 2
    rate = stats["tokens"] / max(stats["seconds"], 1e-9)
    print(f"{stats['documents']} documents, {stats['tokens']} tokens in {stats['seconds']:.1f} s "
          f"({rate:,.0f} tokens/s)" + (f", {stats['samples']} samples" if "samples" in stats else "") +
          (f", {stats['skipped']} lines skipped" if stats["skipped"] else "") + " -> " + ", ".join(stats["outputs"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
