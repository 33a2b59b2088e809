"""Build the shipped tiny English corpus from the Python standard library's own docstrings.

The text is the PSF-licensed documentation that ships inside CPython: the module, class, function and
method docstrings of a fixed list of stdlib modules. Each docstring becomes one document; documents are
separated by a blank line. About 5% of the documents, picked by a hash of their text, go to eval.txt.

    python scripts/build_tiny_corpus.py [--out_dir mindformers/assets/tiny_corpus]

The output depends only on the Python version's docstrings (the shipped files were built with CPython 3.11).
"""
import argparse
import hashlib
import importlib
import inspect
import os
import re
import sys
import warnings
from typing import Iterator, List, Tuple

# Sorted; each imports cleanly on CPython 3.11 without side effects. Codec tables, platform-only modules
# and the setuptools-shadowed distutils are left out: their docstrings are boilerplate or not PSF text.
MODULES = [
    "abc", "argparse", "array", "ast", "asyncio.base_events", "asyncio.events", "asyncio.futures",
    "asyncio.locks", "asyncio.queues", "asyncio.runners", "asyncio.streams", "asyncio.subprocess",
    "asyncio.taskgroups", "asyncio.tasks", "asyncio.timeouts", "asyncio.transports", "base64", "bdb",
    "binascii", "bisect", "builtins", "bz2", "calendar", "cmath", "cmd", "code", "codecs", "codeop",
    "collections", "collections.abc", "colorsys", "compileall", "concurrent.futures",
    "concurrent.futures.process", "concurrent.futures.thread", "configparser", "contextlib",
    "contextvars", "copy", "copyreg", "csv", "ctypes", "dataclasses", "datetime", "dbm", "decimal",
    "difflib", "dis", "doctest", "email.charset", "email.contentmanager", "email.feedparser",
    "email.generator", "email.header", "email.headerregistry", "email.message", "email.parser",
    "email.policy", "email.utils", "enum", "errno", "faulthandler", "filecmp", "fileinput", "fnmatch",
    "fractions", "ftplib", "functools", "gc", "getopt", "getpass", "gettext", "glob", "graphlib", "gzip",
    "hashlib", "heapq", "hmac", "html", "html.parser", "http.client", "http.cookiejar", "http.cookies",
    "http.server", "imaplib", "importlib", "importlib.abc", "importlib.machinery", "importlib.metadata",
    "importlib.resources", "importlib.util", "inspect", "io", "ipaddress", "itertools", "json",
    "json.decoder", "json.encoder", "keyword", "linecache", "locale", "logging", "logging.config",
    "logging.handlers", "lzma", "mailbox", "marshal", "math", "mimetypes", "mmap", "modulefinder",
    "multiprocessing.connection", "multiprocessing.context", "multiprocessing.managers",
    "multiprocessing.pool", "multiprocessing.process", "multiprocessing.queues",
    "multiprocessing.shared_memory", "multiprocessing.synchronize", "netrc", "numbers", "operator",
    "optparse", "os", "pathlib", "pdb", "pickle", "pickletools", "pkgutil", "platform", "plistlib",
    "poplib", "posixpath", "pprint", "profile", "pstats", "py_compile", "pyclbr", "pydoc", "queue",
    "quopri", "random", "re", "reprlib", "runpy", "sched", "secrets", "selectors", "shelve", "shlex",
    "shutil", "signal", "site", "smtplib", "socket", "socketserver", "sqlite3", "ssl", "stat",
    "statistics", "string", "struct", "subprocess", "symtable", "sys", "sysconfig", "tabnanny",
    "tarfile", "tempfile", "textwrap", "threading", "time", "timeit", "token", "tokenize", "tomllib",
    "trace", "traceback", "tracemalloc", "types", "typing", "unicodedata", "unittest.case",
    "unittest.loader", "unittest.main", "unittest.mock", "unittest.result", "unittest.runner",
    "unittest.suite", "urllib.error", "urllib.parse", "urllib.request", "urllib.robotparser", "uuid",
    "warnings", "wave", "weakref", "webbrowser", "wsgiref.handlers", "wsgiref.headers",
    "wsgiref.simple_server", "wsgiref.util", "wsgiref.validate", "xml.dom.minidom", "xml.dom.pulldom",
    "xml.etree.ElementTree", "xml.sax.handler", "xml.sax.saxutils", "xml.sax.xmlreader",
    "xmlrpc.client", "xmlrpc.server", "zipapp", "zipfile", "zipimport", "zlib", "zoneinfo",
]
MIN_CHARS = 120        # shorter docstrings ("Return self==value.") carry almost no prose
EVAL_EVERY = 20        # one document in 20 (by hash) is held out
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(os.path.dirname(HERE), "mindformers", "assets", "tiny_corpus")


def iter_docstrings(module_name: str) -> Iterator[str]:
    """Raw docstrings of a module, its classes, functions and methods, in sorted name order."""
    module = importlib.import_module(module_name)
    for obj in _documented(module):
        doc = getattr(obj, "__doc__", None)
        if isinstance(doc, str):   # a few objects expose a non-string __doc__ attribute
            yield doc


def _documented(module) -> Iterator[object]:
    yield module
    for name in sorted(vars(module)):
        obj = vars(module)[name]
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(obj):
            yield obj
            for member_name in sorted(vars(obj)):
                member = vars(obj)[member_name]
                if isinstance(member, (staticmethod, classmethod)):
                    member = member.__func__
                if not member_name.startswith("_") and callable(member):
                    yield member
        elif callable(obj):
            yield obj


def clean(doc: str) -> str:
    """Dedent a docstring, drop doctest and indented code blocks, and reflow each paragraph onto one line."""
    paragraphs = re.split(r"\n\s*\n", inspect.cleandoc(doc))
    prose = []
    for paragraph in paragraphs:
        # Indented paragraphs are code samples or tables; ">>>" starts a doctest whose "..." lines
        # and output run to the next blank line. Neither is prose.
        if not paragraph.strip() or paragraph[0].isspace():
            continue
        lines = paragraph.splitlines()
        doctest_at = next((i for i, line in enumerate(lines) if line.lstrip().startswith(">>>")), len(lines))
        prose.append(" ".join(" ".join(lines[:doctest_at]).split()))
    return "\n".join(p for p in prose if p)


def build_documents(modules: List[str]) -> List[str]:
    """Cleaned, deduplicated documents in module order."""
    seen, docs = set(), []
    for module_name in modules:
        for raw in iter_docstrings(module_name):
            doc = clean(raw)
            if len(doc) >= MIN_CHARS and doc not in seen:
                seen.add(doc)
                docs.append(doc)
    return docs


def split(docs: List[str]) -> Tuple[List[str], List[str]]:
    """Deterministic train/eval split by a hash of each document's text."""
    train, held_out = [], []
    for doc in docs:
        bucket = int(hashlib.sha256(doc.encode("utf-8")).hexdigest()[:8], 16) % EVAL_EVERY
        (held_out if bucket == 0 else train).append(doc)
    return train, held_out


def write(path: str, docs: List[str]) -> None:
    """One document per block, blocks separated by a blank line."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n\n".join(docs) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", default=DEFAULT_OUT)
    args = parser.parse_args()
    warnings.simplefilter("ignore")   # deprecated modules warn on import; their docstrings are still fine
    train, held_out = split(build_documents(MODULES))
    os.makedirs(args.out_dir, exist_ok=True)
    write(os.path.join(args.out_dir, "corpus.txt"), train)
    write(os.path.join(args.out_dir, "eval.txt"), held_out)
    sizes = {n: os.path.getsize(os.path.join(args.out_dir, n)) for n in ("corpus.txt", "eval.txt")}
    print(f"Python {sys.version.split()[0]}: corpus.txt {len(train)} documents, {sizes['corpus.txt']} bytes; "
          f"eval.txt {len(held_out)} documents, {sizes['eval.txt']} bytes")


if __name__ == "__main__":
    main()
