"""Checks that need more than the schema (the model section read with its config.json), run by --validate and
before a run starts, so every problem is reported at once and before any work."""
import re
from typing import List

from ..config import ConfigError, validate_config
from ..config.schema import SECTIONED_FORM
from ..models.hf import section_problems
from ..tools.paths import resolve_repo_path
from ..tools.register import MindFormerModuleType as T
from ..tools.register import MindFormerRegister


def model_section_errors(config) -> List[str]:
    """One `file:line: message` per problem of `model.model_config` (and `pretrained_model_dir`)."""
    model_cfg = dict(((config.get("model") or {}).get("model_config")) or {})
    model_dir = config.get("pretrained_model_dir")

    def where(key=None):
        return config.where(*(("model", "model_config", key) if key else ("model", "model_config")))

    if model_dir:
        try:
            resolve_repo_path(model_dir, "pretrained_model_dir")
        except FileNotFoundError as err:
            return [f"{config.where('pretrained_model_dir')}: {err} (a Hugging Face model directory or .gguf file)"]
    if "type" in model_cfg and not model_dir:
        try:
            cls = MindFormerRegister.get_cls(T.CONFIG, model_cfg.pop("type"))
            cls(**model_cfg)
        except (ValueError, TypeError, KeyError) as err:
            return [f"{where(_key_of(str(err)))}: {err}"]
        return []
    if not model_dir and not model_cfg.get("model_type"):
        if config.get("model") is None:
            return []
        return [f"{where()}: model.model_config has no 'type', no 'model_type' and there is no pretrained_model_dir "
                f"(name a registered config type, an HF model_type, or a Hugging Face directory)"]
    try:
        problems = section_problems(model_cfg, model_dir)
    except (ValueError, FileNotFoundError) as err:
        return [f"{config.where('pretrained_model_dir') if model_dir else where()}: {err}"]
    return [f"{where(key or _key_of(message))}: {message}" for key, message in problems]


def _key_of(message: str):
    match = re.search(r"model_config\.(\w+)", message)
    return match.group(1) if match else None


def preflight(config) -> None:
    """Raise ConfigError listing every problem of the schema check and of the model section."""
    errors = []
    try:
        validate_config(config)
    except ConfigError as err:
        if any(key in config for key in SECTIONED_FORM):
            raise  # one message for a file in a form this suite does not read
        errors += str(err).splitlines()
    if not any("'model.model_config.type'" in line for line in errors):  # else the class itself is unknown
        errors += model_section_errors(config)
    if errors:
        raise ConfigError("\n".join(errors))
