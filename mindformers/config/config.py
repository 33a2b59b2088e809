"""MindFormerConfig: a YAML config with attribute access, layered, referenced and overridden."""
import copy
import hashlib
import json
from typing import Any, Dict, Iterable, Optional, Union

import yaml

from .loader import ConfigError, Origins, load_layers, parse_value, resolve_references, set_by_path


class MindFormerConfig(dict):
    """A dict whose keys read as attributes; a missing key reads as None (upstream behaviour).

    `MindFormerConfig("x.yaml")` loads the file with its base_config layers and references;
    `MindFormerConfig(a=1, b={...})` or `MindFormerConfig({...})` wraps plain values.
    """

    def __init__(self, *args, **kwargs):
        super().__init__()
        origins: Origins = {}
        if args and isinstance(args[0], str):
            data, origins = load_layers(args[0])
            data = resolve_references(data, origins)
            args = args[1:]
        else:
            data = {}
        for arg in args:
            data.update(dict(arg or {}))
        data.update(kwargs)
        for key, value in data.items():
            self[key] = _wrap(value)
        object.__setattr__(self, "origins", origins)

    def __getattr__(self, key: str):
        if key.startswith("__"):
            raise AttributeError(key)
        return self.get(key)

    def __setattr__(self, key: str, value: Any):
        self[key] = _wrap(value)

    def __delattr__(self, key: str):
        self.pop(key, None)

    def __deepcopy__(self, memo):
        new = MindFormerConfig(copy.deepcopy(dict(self), memo))
        object.__setattr__(new, "origins", dict(self.origins))
        return new

    def to_dict(self) -> Dict[str, Any]:
        """A plain-dict copy (nested configs become dicts)."""
        return _unwrap(self)

    def merge_from_dict(self, options: Dict[str, Any]):
        """Set dotted keys (`{'a.b': 1}`), as `--options a.b=1` does; the dataset task sections follow."""
        data = self.to_dict()
        for key, value in options.items():
            _refuse_task_override(key, data)
            set_by_path(data, key, value, self.origins)
        fill_dataset_tasks(data, self.origins)
        self.clear()
        self.update({k: _wrap(v) for k, v in data.items()})

    def where(self, *path) -> str:
        """Where a key was set: `file:line`, 'command line', or the nearest enclosing key's origin."""
        path = tuple(path)
        while path:
            if path in self.origins:
                return self.origins[path]
            path = path[:-1]
        return "config"

    def to_yaml(self) -> str:
        """The resolved config as YAML text."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=120)

    def hash(self, section: Optional[str] = None) -> str:
        """A short stable hash of the config (or one section), e.g. to tell whether a model changed."""
        value = self.to_dict() if section is None else _unwrap(self.get(section))
        return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _wrap(value):
    if isinstance(value, MindFormerConfig):
        return value
    if isinstance(value, dict):
        return MindFormerConfig(value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def plain(value):
    """A config section (or any value) as plain dicts and lists: MindFormerConfig nodes are dict subclasses."""
    return _unwrap(value)


def _unwrap(value):
    if isinstance(value, dict):
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_unwrap(v) for v in value]
    return value


def load_config(path: str, overrides: Union[Dict[str, Any], Iterable[str], None] = None,
                validate: bool = True) -> MindFormerConfig:
    """Load `path` with base_config layers, apply `a.b.c` overrides (typed strings or values), resolve
    `${}` references and check every key against the schema."""
    data, origins = load_layers(path)
    for key, value in _override_items(overrides):
        _refuse_task_override(key, data)
        set_by_path(data, key, value, origins)
    data = resolve_references(data, origins)
    fill_dataset_tasks(data, origins)
    cfg = MindFormerConfig(data)
    object.__setattr__(cfg, "origins", origins)
    if validate:
        from .schema import validate_config
        validate_config(cfg)
    return cfg


def fill_dataset_tasks(data: Dict[str, Any], origins) -> None:
    """Upstream's rule: `<split>_dataset_task.dataset_config` is `<split>_dataset`, applied after every override,
    so overriding `train_dataset` (child YAML, --train_dataset_dir, Trainer) changes the data trained on."""
    for split in ("train", "eval"):
        section, task = data.get(f"{split}_dataset"), data.get(f"{split}_dataset_task")
        if isinstance(section, dict) and isinstance(task, dict):
            task["dataset_config"] = copy.deepcopy(section)
            prefix = (f"{split}_dataset_task", "dataset_config")
            for p in [p for p in origins if p[:2] == prefix]:
                del origins[p]
            origins.update({prefix + p[1:]: w for p, w in list(origins.items()) if p[:1] == (f"{split}_dataset",)})


def _refuse_task_override(key: str, data: Dict[str, Any]) -> None:
    """An override of the task copy would be replaced by `<split>_dataset`: name the key to set instead."""
    for split in ("train", "eval"):
        prefix = f"{split}_dataset_task.dataset_config"
        if (key == prefix or key.startswith(prefix + ".")) and isinstance(data.get(f"{split}_dataset"), dict):
            raise ConfigError(f"command line: '{key}' is filled from {split}_dataset (upstream's rule); set "
                              f"'{split}_dataset{key[len(prefix):]}' instead")


def _override_items(overrides):
    if not overrides:
        return []
    if isinstance(overrides, dict):
        return list(overrides.items())
    items = []
    for item in overrides:
        if isinstance(item, tuple):
            items.append(item)
            continue
        if "=" not in item:
            raise ConfigError(f"command line: override '{item}' must look like key.path=value")
        key, value = item.split("=", 1)
        items.append((key.strip(), parse_value(value)))
    return items


__all__ = ["MindFormerConfig", "ConfigError", "load_config", "parse_value", "plain"]
