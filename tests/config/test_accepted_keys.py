"""Nothing accepted that is not done: every schema key and every registered constructor argument is read by the
code, refused with a one-line error, or (speed hints only) logged once as having no effect."""
import ast
import inspect
import logging
import pathlib
import re
import textwrap

import pytest

from mindformers.config import ConfigError, MindFormerConfig, validate_config
from mindformers.config.schema import DATASET, SCHEMA, NoEffect, Refused, Typed
from mindformers.dataset.causal_language_model_dataset import _CONFIG_KEYS
from mindformers.tools.register import MindFormerRegister

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "mindformers"
# where a key's name appearing proves nothing: the schema itself and the CLI's flag table
NOT_EVIDENCE = ("config", "tools/cli.py")


def _package_names(with_arguments: bool):
    """Every string constant (and its dotted parts), attribute and keyword name in the package's code, and
    with `with_arguments` every function's argument names (a section passed on with ** lands there; the
    constructor test below checks those arguments are used)."""
    names = set()
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith(NOT_EVIDENCE):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                names.add(node.value)
                names.update(re.split(r"[.\s]", node.value))
            elif isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif isinstance(node, ast.keyword) and node.arg:
                names.add(node.arg)
            elif with_arguments and isinstance(node, ast.arg):
                names.add(node.arg)
    return names


NAMES = _package_names(with_arguments=False)
KEY_NAMES = _package_names(with_arguments=True)


def _leaves(schema, path=()):
    """(dotted path, rule) of every key of the schema below `path`."""
    if isinstance(schema, Typed):
        schema = schema.nested
    if not isinstance(schema, dict):
        return
    for key, sub in schema.items():
        if sub is None or isinstance(sub, (Refused, NoEffect)):
            yield path + (key,), sub
        else:
            yield from _leaves(sub, path + (key,))


LEAVES = [leaf for leaf in _leaves(SCHEMA) if "dataset_config" not in leaf[0]]


def test_every_read_key_is_named_by_the_code():
    unread = [".".join(p) for p, rule in LEAVES if rule is None and p[-1] not in KEY_NAMES]
    assert unread == []


def test_dataset_keys_are_the_dataset_builders_keys():
    read = {k for k, rule in DATASET.items() if rule is None or isinstance(rule, Typed)}
    assert read <= set(_CONFIG_KEYS)


def _set(path, value):
    data = node = {}
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return MindFormerConfig(data)


def _active_value(rule):
    for candidate in (True, 7, "something", ["x"], {"expert_num": 8}):
        inert = rule.inert(candidate) if callable(rule.inert) else candidate in rule.inert
        if not inert:
            return candidate
    raise AssertionError(f"no active value for {rule.why}")


@pytest.mark.parametrize("path", [p for p, rule in LEAVES if isinstance(rule, Refused)], ids=".".join)
def test_refused_keys_stop_with_one_line_naming_them(path):
    rule = dict(LEAVES)[path]
    cfg = _set(path, _active_value(rule))
    if rule.devices:
        cfg.setdefault("context", {})["device_target"] = rule.devices[0]
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    message = str(err.value)
    assert "\n" not in message and ".".join(path) in message and "not supported" in message


@pytest.mark.parametrize("path", [p for p, rule in LEAVES if isinstance(rule, NoEffect)], ids=".".join)
def test_no_effect_keys_are_logged_once(path, caplog, monkeypatch):
    from mindformers.tools import logger as log
    monkeypatch.setattr(log, "LOGGED_ONCE", set())  # an earlier test may have logged this key
    cfg = _set(path, True)
    with caplog.at_level(logging.INFO, logger="mindformers"):
        validate_config(cfg)
        validate_config(cfg)
    lines = [r.getMessage() for r in caplog.records if "has no effect" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith(".".join(path))


def _init_source(obj):
    fn = obj.__init__ if inspect.isclass(obj) else obj
    if inspect.isclass(obj) and "__init__" not in vars(obj):
        return None
    try:
        return ast.parse(textwrap.dedent(inspect.getsource(fn))).body[0]
    except (OSError, TypeError):
        return None


def _unused_arguments(obj):
    """Arguments of a registered constructor that nothing reads: not used in __init__ beyond being stored on
    self (or captured with locals()), or stored on an attribute that no code in the package reads."""
    tree = _init_source(obj)
    if tree is None:
        return []
    params = [a.arg for a in tree.args.args + tree.args.kwonlyargs if a.arg not in ("self", "cls")]
    captured = any(isinstance(n, ast.Call) and getattr(n.func, "id", None) == "locals" for n in ast.walk(tree))
    stores, loads = {}, {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            targets = [e for t in node.targets for e in (t.elts if isinstance(t, ast.Tuple) else [t])]
            values = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value] * len(targets)
            for target, value in zip(targets, values):
                if isinstance(target, ast.Attribute) and isinstance(value, ast.Name) and value.id in params:
                    stores[value.id] = target.attr
                    loads[value.id] = loads.get(value.id, 0) - 1  # the store itself is not a use
        if isinstance(node, ast.Name) and node.id in params and isinstance(node.ctx, ast.Load):
            loads[node.id] = loads.get(node.id, 0) + 1
    unused = []
    for name in params:
        if loads.get(name, 0) > 0 and not captured:
            continue
        attr = stores.get(name, name if captured else None)
        if attr is not None and attr in NAMES:
            continue
        if captured and (f'"{name}"' in ast.unparse(tree) or f"'{name}'" in ast.unparse(tree)):
            continue  # checked or refused by name in the constructor (e.g. a table of unsupported keys)
        unused.append(name)
    return unused


REGISTERED = sorted({(t.value, name): obj for t, table in MindFormerRegister.registry.items()
                     for name, obj in table.items()}.items())


@pytest.mark.parametrize("key,obj", REGISTERED, ids=[f"{t}.{n}" for (t, n), _ in REGISTERED])
def test_every_constructor_argument_is_used(key, obj):
    assert _unused_arguments(obj) == []
