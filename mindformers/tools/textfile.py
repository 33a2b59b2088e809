"""Reading text and JSON files a run is given, with errors that name the file and line."""
import codecs
import json
from typing import Any


def not_utf8(path: str, data: bytes, err: UnicodeDecodeError) -> ValueError:
    """The error for `data` (the bytes of `path`) failing to decode at `err.start`: file:line and column."""
    line = data.count(b"\n", 0, err.start) + 1
    column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
    return ValueError(f"{path}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x} at column {column}: "
                      f"{err.reason}) (save the file as UTF-8)")


def read_text(path: str) -> str:
    """The UTF-8 text of `path`; a byte that is not UTF-8 is a ValueError naming file, line and column."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise not_utf8(path, data, err) from None


def check_utf8(path: str, chunk_size: int = 1 << 24) -> None:
    """Raise the not_utf8 error for the first byte of `path` that is not UTF-8, reading it in chunks (for data
    files too large to hold, whose reader would only fail later, on the record)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines, offset, last_newline = 0, 0, -1
    with open(path, "rb") as f:
        while True:
            chunk = f.read(chunk_size)
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as err:
                # err.object is the chunk after the bytes of a sequence the previous chunk left open
                pos = offset - (len(err.object) - len(chunk)) + err.start
                upto = max(0, pos - offset)
                newline = chunk.rfind(b"\n", 0, upto)
                column = pos - (offset + newline if newline >= 0 else last_newline)
                line = lines + chunk.count(b"\n", 0, upto) + 1
                raise ValueError(f"{path}:{line}: not UTF-8 text (byte "
                                 f"0x{err.object[err.start]:02x} at column {column}: {err.reason}) (save the file "
                                 f"as UTF-8)") from None
            if not chunk:
                return
            lines += chunk.count(b"\n")
            if chunk.rfind(b"\n") >= 0:
                last_newline = offset + chunk.rfind(b"\n")
            offset += len(chunk)


def read_json(path: str) -> Any:
    """The JSON value of `path`; bad UTF-8 or bad JSON is a ValueError naming file and line."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON at line {err.lineno}, column {err.colno} ({err.msg}) "
                         f"(a JSON document)") from None
