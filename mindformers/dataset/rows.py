"""Rows of a user's instruction/preference file, and LLaMA-Factory-style mapping of its fields.

`read_rows` gives each row of a .json / .jsonl / .parquet file with its place ("file:line"), so every later
error can name it. `Columns` and `Tags` are the `columns:` / `tags:` of LLaMA-Factory's dataset_info.json:
`columns` maps a handler's column names (prompt, query, response, history, messages, chosen, rejected,
system) to a file's field names, `tags` the keys and role values of sharegpt messages.
"""
import json
import os
import re
from typing import Dict, Iterable, List, Optional, Tuple

from ..tools.paths import resolve_repo_path
from ..tools.textfile import read_text

_SPACE = re.compile(r"[ \t\n\r]*")


def read_rows(path: str, kind: Optional[str] = None) -> List[Tuple[str, dict]]:
    """(place, row) for each row of a .json (a list of objects), .jsonl or .parquet file; place is "file:line"
    ("file: row i" for parquet). Malformed input is an error naming the file and line."""
    path = resolve_repo_path(path, "data_files")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data_files {path} does not exist")
    kind = kind if kind in ("json", "parquet") else ("parquet" if path.endswith(".parquet") else "json")
    if kind == "parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ImportError(f"reading {path} needs pyarrow: pip install pyarrow") from None
        rows = [(f"{path}: row {i}", r) for i, r in enumerate(pq.read_table(path).to_pylist(), 1)]
    else:
        text = read_text(path)
        rows = _json_array(path, text) if text.lstrip().startswith("[") else _json_lines(path, text)
    if not rows:
        raise ValueError(f"{path}: no samples")
    bad = next((place for place, r in rows if not isinstance(r, dict)), None)
    if bad:
        raise ValueError(f"{bad}: the sample is not a JSON object")
    return rows


def _json_lines(path: str, text: str) -> List[Tuple[str, object]]:
    rows = []
    for line_no, line in enumerate(text.split("\n"), 1):  # not splitlines(): JSON strings may hold U+2028 raw
        if line.strip():
            try:
                rows.append((f"{path}:{line_no}", json.loads(line)))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({err.msg})") from None
    return rows


def _json_array(path: str, text: str) -> List[Tuple[str, object]]:
    """The elements of one JSON array, each with the line it starts on."""
    decoder, rows = json.JSONDecoder(), []
    pos = _SPACE.match(text, text.index("[") + 1).end()
    line, counted = 1, 0
    try:
        while pos < len(text) and text[pos] != "]":
            line, counted = line + text.count("\n", counted, pos), pos
            row, pos = decoder.raw_decode(text, pos)
            rows.append((f"{path}:{line}", row))
            pos = _SPACE.match(text, pos).end()
            if pos < len(text) and text[pos] == ",":
                pos = _SPACE.match(text, pos + 1).end()
            elif pos >= len(text) or text[pos] != "]":
                raise json.JSONDecodeError("expected ',' or ']'", text, pos)
        if pos >= len(text) or _SPACE.match(text, pos + 1).end() != len(text):
            raise json.JSONDecodeError("expected one JSON array", text, min(pos + 1, len(text)))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
    return rows


def _names(row: dict) -> str:
    return ", ".join(map(repr, row)) or "none"


def _named_strings(owner: str, section: str, kind: str, given: Optional[dict], valid, what: str) -> dict:
    """`given` (a handler's columns: or tags:) as a dict, each key one of `valid` and each value a non-empty
    string; anything else is an error naming it."""
    given = dict(given or {})
    for name, value in given.items():
        if name not in valid:
            raise ValueError(f"{owner}.{section}: unknown {kind} '{name}' (valid: {', '.join(valid)})")
        if not isinstance(value, str) or not value:
            raise ValueError(f"{owner}.{section}.{name}: {what}, got {value!r}")
    return given


class Columns:
    """A handler's `columns:` (handler column -> file field), over the handler's defaults.

    A column the user named must be present in every row; a default-named optional one may be absent.
    """

    def __init__(self, owner: str, columns: Optional[dict], defaults: Dict[str, str], required: Iterable[str]):
        columns = _named_strings(owner, "columns", "column", columns, defaults, "a field name (a string)")
        self.fields, self.named, self.required = {**defaults, **columns}, set(columns), set(required)

    def has(self, row: dict, column: str) -> bool:
        """Whether `row` holds `column`'s field."""
        return self.fields[column] in row

    def get(self, row: dict, column: str, where: str):
        """`row`'s value of `column`; None for an absent optional column."""
        field = self.fields[column]
        value = row.get(field)
        if field not in row and (column in self.named or column in self.required) or \
                value is None and column in self.required:
            origin = f"columns.{column}" if column in self.named else f"the default field of columns.{column}"
            raise ValueError(f"{where}: no '{field}' field ({origin}); the row has {_names(row)}")
        return value


# sharegpt role values, lower-cased, and the role each one is
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
         "bing": "assistant", "bard": "assistant", "model": "assistant", "system": "system"}
_TAG_ROLES = {"user_tag": "user", "assistant_tag": "assistant", "system_tag": "system"}
TAG_NAMES = ("role_tag", "content_tag", *_TAG_ROLES)


class Tags:
    """A handler's `tags:`: which message keys hold the role and the text, and which role values mean what.

    Without role_tag / content_tag a message's role is read from "from" or "role" and its text from "value"
    or "content"; user_tag / assistant_tag / system_tag (and `roles`) add role values to the usual ones.
    """

    def __init__(self, owner: str, tags: Optional[dict], roles: Optional[dict] = None):
        tags = _named_strings(owner, "tags", "tag", tags, TAG_NAMES, "a string")
        for value, role in (roles or {}).items():
            if role not in ("user", "assistant", "system"):
                raise ValueError(f"{owner}.roles: '{value}' maps to '{role}' (valid: user, assistant, system)")
        self.role_keys = [tags["role_tag"]] if "role_tag" in tags else ["from", "role"]
        self.content_keys = [tags["content_tag"]] if "content_tag" in tags else ["value", "content"]
        self.roles = {**ROLES, **{str(k).lower(): v for k, v in (roles or {}).items()},
                      **{tags[t].lower(): role for t, role in _TAG_ROLES.items() if t in tags}}

    def message(self, turn, where: str) -> Dict[str, str]:
        """One {role, content} message of a sharegpt turn."""
        keys = f"{'/'.join(self.role_keys)} and {'/'.join(self.content_keys)}"
        if not isinstance(turn, dict):
            raise ValueError(f"{where}: turn {turn!r} is not an object with {keys}")
        role_key = next((k for k in self.role_keys if k in turn), None)
        content_key = next((k for k in self.content_keys if k in turn), None)
        if role_key is None or content_key is None:
            raise ValueError(f"{where}: turn {turn!r} needs {keys} (set tags: role_tag / content_tag for other "
                             f"keys); it has {_names(turn)}")
        role = self.roles.get(str(turn[role_key]).lower())
        if role is None:
            raise ValueError(f"{where}: turn {turn!r} has the unknown role '{turn[role_key]}' (known: "
                             f"{', '.join(sorted(self.roles))}; tags: user_tag / assistant_tag / system_tag add one)")
        if not isinstance(turn[content_key], str):
            raise ValueError(f"{where}: turn {turn!r}: '{content_key}' must be text")
        return {"role": role, "content": turn[content_key]}


__all__ = ["read_rows", "Columns", "Tags", "ROLES", "TAG_NAMES"]
