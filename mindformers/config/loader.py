"""Reading YAML config files: base_config layering, `${}` references, typed overrides, key origins."""
import copy
import os
import re
from typing import Any, Dict, List, Optional, Tuple

import yaml

Path = Tuple[Any, ...]
Origins = Dict[Path, str]


class ConfigError(ValueError):
    """A config problem, reported as one line per problem naming file, line and key."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads `1e-5` as a float, as YAML 1.2 and users expect (PyYAML 1.1 says string)."""


_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)
_Loader.yaml_implicit_resolvers = {k: [r for r in v if r[0] != "tag:yaml.org,2002:float"]
                                   for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def parse_value(text: str) -> Any:
    """Type a command-line value the way YAML would (true, 1.0, 1e-5, [1, 2], null; else a string)."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:
        return text


def parse_options(items) -> dict:
    """`key.path=value` strings (typed as YAML) as an overrides dict; a malformed one is a ValueError."""
    bad = [item for item in items if "=" not in item]
    if bad:
        raise ValueError(f"--options {bad[0]!r} must look like key.path=value")
    return {k.strip(): parse_value(v) for k, v in (item.split("=", 1) for item in items)}


def _line_origins(node, path: Path, file: str, out: Origins):
    """Record `file:line` for every mapping key below `node` (composed YAML tree)."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` merges keys in place
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for src in sources:
                    _line_origins(src, path, file, out)
                continue
            key = yaml.load(yaml.serialize(key_node), Loader=_Loader) if key_node.tag != \
                "tag:yaml.org,2002:str" else key_node.value
            sub = path + (key,)
            out.setdefault(sub, f"{file}:{key_node.start_mark.line + 1}")
            _line_origins(value_node, sub, file, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            sub = path + (i,)
            out.setdefault(sub, f"{file}:{item.start_mark.line + 1}")
            _line_origins(item, sub, file, out)


def read_yaml(file: str) -> Tuple[Dict[str, Any], Origins]:
    """Parse one YAML file into a dict plus the file:line of every key."""
    try:
        with open(file, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read config file {file}: {e.strerror}") from None
    try:
        data = yaml.load(text, Loader=_Loader)
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark else file
        raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', None) or e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: a config file must hold a mapping of keys, got {type(data).__name__}")
    origins: Origins = {}
    _line_origins(node, (), file, origins)
    return data, origins


def deep_merge(base: Dict, child: Dict, base_origins: Origins, child_origins: Origins, path: Path = ()):
    """Merge `child` into `base` in place: mappings merge key by key, anything else is replaced.

    A mapping whose `type` names another registered component inherits only the base keys that component
    accepts (a TextDataLoader's dataset_dir is dropped when the child switches to CommonDataLoader; a
    subclass config keeps them all).
    """
    for key, value in child.items():
        sub = path + (key,)
        if isinstance(value, dict) and isinstance(base.get(key), dict) and "type" in value \
                and "type" in base[key] and value["type"] != base[key]["type"]:
            for dropped in _keys_not_accepted(value["type"], base[key]):
                del base[key][dropped]
                for p in [p for p in base_origins if p[:len(sub) + 1] == sub + (dropped,)]:
                    del base_origins[p]
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_merge(base[key], value, base_origins, child_origins, sub)
            if sub in child_origins:
                base_origins[sub] = child_origins[sub]
        else:
            for p in [p for p in base_origins if p[:len(sub)] == sub]:
                del base_origins[p]
            base[key] = copy.deepcopy(value)
            base_origins.update({p: w for p, w in child_origins.items() if p[:len(sub)] == sub})


def _keys_not_accepted(type_name, section: Dict) -> list:
    """Keys of `section` that the registered component `type_name` does not take (none if unknown)."""
    from ..tools.register.register import MindFormerRegister, accepted_kwargs

    for table in MindFormerRegister.registry.values():
        if type_name in table:
            accepted = accepted_kwargs(table[type_name])
            return [] if accepted is None else [k for k in section if k != "type" and k not in accepted]
    return []


def load_layers(file: str, _chain: Optional[List[str]] = None) -> Tuple[Dict[str, Any], Origins]:
    """Load `file` on top of its `base_config` files (paths relative to it), in order, child last."""
    file = os.path.abspath(file)
    chain = (_chain or []) + [file]
    if file in (_chain or []):
        raise ConfigError("base_config cycle: " + " -> ".join(_short(f) for f in chain))
    data, origins = read_yaml(_short(file))
    bases = data.pop("base_config", None) or []
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{origins.get(('base_config',), _short(file))}: base_config must be a path "
                          f"or a list of paths, got {bases!r}")
    merged: Dict[str, Any] = {}
    merged_origins: Origins = {}
    for i, base in enumerate(bases):
        base_path = os.path.join(os.path.dirname(file), base)
        if not os.path.isfile(base_path):
            where = origins.get(("base_config", i), origins.get(("base_config",), _short(file)))
            raise ConfigError(f"{where}: base_config '{base}' not found (looked for {_short(base_path)})")
        base_data, base_origins = load_layers(base_path, chain)
        deep_merge(merged, base_data, merged_origins, base_origins)
    origins = {p: w for p, w in origins.items() if p[:1] != ("base_config",)}
    deep_merge(merged, data, merged_origins, origins)
    return merged, merged_origins


def _short(path: str) -> str:
    rel = os.path.relpath(path)
    return rel if not rel.startswith("..") else path


def set_by_path(data: Dict, dotted: str, value: Any, origins: Origins, where: str = "command line"):
    """Set `a.b.0.c` to value, creating mappings on the way; list items are addressed by index."""
    keys: List[Any] = dotted.split(".")
    if not all(keys):
        raise ConfigError(f"{where}: malformed key '{dotted}'")
    node = data
    path: Path = ()
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise ConfigError(f"{where}: '{'.'.join(keys[:i])}' is a list of {len(node)} items; "
                                  f"'{key}' is not a valid index")
            key = int(key)
        elif not isinstance(node, dict):
            raise ConfigError(f"{where}: cannot set '{dotted}': '{'.'.join(map(str, path))}' is "
                              f"{type(node).__name__} {node!r}, not a mapping")
        path += (key,)
        if last:
            node[key] = value
        elif isinstance(node, dict) and not isinstance(node.get(key), (dict, list)):
            node[key] = {}
        if not last:
            node = node[key]
    for p in [p for p in origins if p[:len(path)] == path]:
        del origins[p]
    origins[path] = where


def resolve_references(data: Dict, origins: Origins) -> Dict:
    """Resolve `${a.b}` (and omegaconf resolvers like `${oc.env:HOME}`) against the merged config."""
    if "${" not in repr(data):
        return data
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException
    try:
        return OmegaConf.to_container(OmegaConf.create(data), resolve=True)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", "") or ""
        where = origins.get(tuple(int(k) if k.isdigit() else k for k in str(key).replace("[", ".")
                                  .replace("]", "").split(".") if k), "config")
        # OmegaConf's message goes on with full_key/object_type lines: the first line names what is missing
        reason = str(getattr(e, "msg", e)).strip().splitlines()[0]
        raise ConfigError(f"{where}: cannot resolve reference in '{key}': {reason}") from None
