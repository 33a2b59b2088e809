"""One registry for every component a YAML names by `type:`."""
import difflib
import importlib.util
import inspect
import os
import sys
from enum import Enum
from typing import Any, Callable, Dict, Optional


class MindFormerModuleType(str, Enum):
    """Kinds of registered components (upstream names), each one built from a YAML section somewhere.

    Upstream's PIPELINE, MODULES and LOSS kinds are absent: nothing here builds those from a config, so a
    registration under them would be accepted and never used."""
    TRAINER = "trainer"
    PROCESSOR = "processor"
    TOKENIZER = "tokenizer"
    DATASET = "dataset"
    DATASET_LOADER = "dataset_loader"
    DATA_HANDLER = "data_handler"
    MODELS = "models"
    CONFIG = "config"
    OPTIMIZER = "optimizer"
    LR = "lr"
    WRAPPER = "wrapper"
    CALLBACK = "callback"
    METRIC = "metric"
    TOOLS = "tools"


class MindFormerRegister:
    """Maps (module type, name) to a class or function."""

    registry: Dict[MindFormerModuleType, Dict[str, Any]] = {t: {} for t in MindFormerModuleType}

    @classmethod
    def register(cls, module_type: MindFormerModuleType = MindFormerModuleType.TOOLS,
                 alias: Optional[str] = None) -> Callable:
        """Decorator: register a class or function under its name (and `alias`, if given)."""
        module_type = MindFormerModuleType(module_type)

        def decorator(obj):
            for name in filter(None, (obj.__name__, alias)):
                existing = cls.registry[module_type].get(name)
                if existing is not None and existing is not obj and not _same_definition(existing, obj):
                    raise ValueError(
                        f"{module_type.name} '{name}' is already registered by "
                        f"{existing.__module__}.{existing.__qualname__}; pick another name or alias")
                cls.registry[module_type][name] = obj
            return obj
        return decorator

    @classmethod
    def register_cls(cls, obj, module_type: MindFormerModuleType = MindFormerModuleType.TOOLS,
                     alias: Optional[str] = None):
        """Register `obj` without the decorator syntax."""
        return cls.register(module_type, alias)(obj)

    @classmethod
    def is_exist(cls, module_type: MindFormerModuleType, name: str) -> bool:
        """Whether `name` is registered under `module_type`."""
        return name in cls.registry[MindFormerModuleType(module_type)]

    @classmethod
    def names(cls, module_type: MindFormerModuleType):
        """Sorted names registered under `module_type`."""
        return sorted(cls.registry[MindFormerModuleType(module_type)])

    @classmethod
    def get_cls(cls, module_type: MindFormerModuleType, name: str):
        """Look up a component; an unknown name is an error listing the closest registered names."""
        module_type = MindFormerModuleType(module_type)
        table = cls.registry[module_type]
        if name not in table:
            close = difflib.get_close_matches(str(name), table.keys(), n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
            raise KeyError(
                f"unknown {module_type.name} type '{name}': {hint}"
                f"registered: {', '.join(sorted(table)) or '(none)'} (a class of your own, e.g. under research/? "
                f"load it with --register_path DIR)")
        return table[name]

    @classmethod
    def get_instance_from_cfg(cls, cfg, module_type: MindFormerModuleType, default_args=None):
        """Build an instance from a config with a `type` key: upstream's spelling of build_from_config, kept for
        user code written against upstream."""
        return build_from_config(cfg, module_type, **(default_args or {}))


def _same_definition(a, b) -> bool:
    # Re-importing a module (e.g. a user file loaded twice) re-defines the same class: allow it.
    return getattr(a, "__module__", None) == getattr(b, "__module__", None) and \
        getattr(a, "__qualname__", None) == getattr(b, "__qualname__", None)


def build_from_config(cfg, module_type: MindFormerModuleType, **defaults):
    """Instantiate `cfg['type']` with the other keys of `cfg` as keyword arguments.

    A config key the constructor does not accept is an error naming it and the accepted keys, so a
    typo never goes unnoticed. `defaults` are framework-supplied values (tokenizer, seq_length, ...):
    they fill keys the config does not set and are passed only if the constructor accepts them.
    """
    if cfg is None:
        return None
    if isinstance(cfg, str):
        cfg = {"type": cfg}
    if not hasattr(cfg, "keys") or "type" not in cfg:
        raise ValueError(f"a {MindFormerModuleType(module_type).name} config needs a 'type' key, got {cfg!r}")
    kwargs = {k: cfg[k] for k in cfg.keys() if k != "type"}
    obj = MindFormerRegister.get_cls(module_type, cfg["type"])
    accepted = accepted_kwargs(obj)
    _check_kwargs(kwargs, accepted, cfg["type"])
    for key, value in defaults.items():
        if key not in kwargs and (accepted is None or key in accepted):
            kwargs[key] = value
    return obj(**kwargs)


def accepted_kwargs(obj) -> Optional[list]:
    """Keyword names a class's constructor (or a function) takes; None if it takes **kwargs."""
    # A class whose __init__ passes **kwargs on to a base class of this package accepts the base's keys too.
    targets = [vars(c)["__init__"] for c in obj.__mro__ if "__init__" in vars(c)
               and (c is obj or c.__module__.startswith("mindformers."))] if inspect.isclass(obj) else [obj]
    if inspect.isclass(obj) and not targets:  # no __init__ in this package: its __new__, else object's (none)
        targets = [vars(c)["__new__"] for c in obj.__mro__ if "__new__" in vars(c)
                   and c.__module__.startswith("mindformers.")][:1]
        if not targets:
            return []
    names = []
    for target in targets:
        try:
            params = inspect.signature(target).parameters
        except (TypeError, ValueError):
            return None
        names += [n for n, p in params.items() if n not in ("self", "cls")
                  and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and n not in names]
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            return names
    return None


def _check_kwargs(kwargs, accepted, type_name):
    if accepted is None:
        return
    for key in kwargs:
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise TypeError(f"{type_name} got an unknown argument '{key}': {hint}accepted: {', '.join(accepted)}")


def register_path(path: str):
    """Import every Python module under `path` (a file or a directory) so that it registers itself."""
    path = os.path.abspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"--register_path {path}: no such file or directory")
    files = [path] if os.path.isfile(path) else sorted(
        os.path.join(root, f) for root, _, names in os.walk(path) for f in names
        if f.endswith(".py") and not f.startswith("test_"))
    parent = os.path.dirname(path) if os.path.isfile(path) else path
    if parent not in sys.path:
        sys.path.insert(0, parent)
    for file in files:
        name = "mf_user_" + os.path.relpath(file, parent)[:-3].replace(os.sep, "_").replace(".", "_")
        if name in sys.modules:
            continue
        spec = importlib.util.spec_from_file_location(name, file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
