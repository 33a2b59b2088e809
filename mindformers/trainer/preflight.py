"""Checks that need more than the schema (the model section read with its config.json), run by --validate and
before a run starts, so every problem is reported at once and before any work."""
import glob
import logging
import os
import re
from typing import List

from ..config import ConfigError, validate_config
from ..config.schema import SECTIONED_FORM
from ..models.hf import section_problems
from ..tools.paths import REPO_ROOT, resolve_repo_path
from ..tools.register import MindFormerModuleType as T
from ..tools.register import MindFormerRegister
from ..tools.textfile import read_json


def model_section_errors(config) -> List[str]:
    """One `file:line: message` per problem of `model.model_config` (and `pretrained_model_dir`)."""
    model_cfg = dict(((config.get("model") or {}).get("model_config")) or {})
    model_dir = config.get("pretrained_model_dir")

    def where(key=None):
        return config.where(*(("model", "model_config", key) if key else ("model", "model_config")))

    if model_dir:
        try:
            found = resolve_repo_path(model_dir, "pretrained_model_dir")
        except FileNotFoundError as err:
            return [f"{config.where('pretrained_model_dir')}: {err} (a Hugging Face model directory or .gguf file)"]
        broken = _broken_json(found)
        if broken:
            return broken
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


def _broken_json(model_dir: str) -> List[str]:
    """The JSON files of a Hugging Face directory that do not parse, each named with its line."""
    errors = []
    for name in HF_JSON_FILES:
        path = os.path.join(model_dir, name)
        if os.path.isfile(path):
            try:
                read_json(path)
            except ValueError as err:
                errors.append(str(err))
    return errors


def _key_of(message: str):
    match = re.search(r"model_config\.(\w+)", message)
    return match.group(1) if match else None


# the JSON files of a Hugging Face model directory a run reads
HF_JSON_FILES = ("config.json", "tokenizer_config.json", "generation_config.json")
# data loader arguments that name local files (a list names several)
DATA_PATH_KEYS = ("dataset_dir", "dataset_files", "data_files", "data_dir", "data_path")


def data_path_errors(config) -> List[str]:
    """One line per data file or directory that the run mode will read and that does not exist."""
    splits = {"train": ["train"], "finetune": ["train"], "eval": ["eval"]}.get(config.get("run_mode") or "train", [])
    if config.get("do_eval") and splits == ["train"]:
        splits.append("eval")
    errors = []
    for split in splits:
        loader = (config.get(f"{split}_dataset") or {}).get("data_loader") or {}
        for key in DATA_PATH_KEYS:
            value = loader.get(key)
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, str) and item and not _local_path_exists(item, key):
                    errors.append(f"{config.where(f'{split}_dataset', 'data_loader', key)}: "
                                  f"'{split}_dataset.data_loader.{key}': '{item}' does not exist (looked in the "
                                  f"current directory and {REPO_ROOT}; give an existing file or directory)")
    return errors


def _local_path_exists(path: str, key: str) -> bool:
    expanded = os.path.expanduser(path)
    candidates = [expanded] if os.path.isabs(expanded) else [expanded, os.path.join(REPO_ROOT, expanded)]
    # data_path may be an indexed dataset's prefix (<prefix>.bin/.idx); data_files may be a glob
    suffixes = ("", ".bin") if key == "data_path" else ("",)
    return any(glob.glob(c + s) for c in candidates for s in suffixes)


def launch_errors(config) -> List[str]:
    """What the config asks of this machine and launch: a device MindSpore has, msrun's workers for use_parallel,
    and parallel_config's data x model x pipeline product equal to the worker count."""
    errors = []
    device = (config.get("context") or {}).get("device_target") or "CPU"
    if device in ("Ascend", "GPU") and not _device_available(device):
        errors.append(f"{config.where('context', 'device_target')}: 'context.device_target: {device}': MindSpore "
                      f"has no {device} backend on this machine (device_target: CPU, or run where {device} is)")
    layout = config.get("parallel_config") or {}
    sizes = [layout.get(k) if isinstance(layout.get(k), int) else 1
             for k in ("data_parallel", "model_parallel", "pipeline_stage")]
    product = sizes[0] * sizes[1] * sizes[2]
    data_parallel_mode = (config.get("parallel") or {}).get("parallel_mode", 0) in (0, "data_parallel", None)
    if not config.get("use_parallel"):
        workers = 1
    elif "MS_WORKER_NUM" not in os.environ and "RANK_TABLE_FILE" not in os.environ:
        errors.append(f"{config.where('use_parallel')}: 'use_parallel: True' needs the workers started by msrun "
                      f"(bash msrun_launcher.sh \"run_mindformer.py --config ...\" <worker_num>, or use_parallel: "
                      f"False for one process)")
        return errors
    else:
        workers = int(os.environ.get("MS_WORKER_NUM") or os.environ.get("RANK_SIZE") or 0)
    # in data-parallel mode a layout left at 1 x 1 x 1 means data parallel over every worker (upstream's default)
    if workers and product != workers and not (data_parallel_mode and product == 1):
        named = [k for k, n in zip(("data_parallel", "model_parallel", "pipeline_stage"), sizes) if n != 1]
        errors.append(f"{config.where('parallel_config', *named[:1])}: 'parallel_config': data_parallel {sizes[0]} x "
                      f"model_parallel {sizes[1]} x pipeline_stage {sizes[2]} = {product}, but this run has "
                      f"{workers} worker{'s' if workers > 1 else ''} (make the product {workers})")
    return errors


def _device_available(device: str) -> bool:
    try:
        import mindspore as ms
        from mindspore import log as ms_log
    except ImportError:
        return True
    ms_logger = ms_log._get_logger()  # pylint: disable=protected-access
    level = ms_logger.level
    ms_logger.setLevel(logging.ERROR)  # its plugin-loading warnings: our one line says it
    try:
        return bool(ms.hal.is_available(device))
    except Exception:  # noqa: BLE001 - an older MindSpore without hal: the run itself will tell
        return True
    finally:
        ms_logger.setLevel(level)


def preflight(config) -> None:
    """Raise ConfigError listing every problem of the schema check and of the model section (with the data
    paths); what the launch must provide is checked once the config itself is clean."""
    errors = []
    try:
        validate_config(config)
    except ConfigError as err:
        if any(key in config for key in SECTIONED_FORM):
            raise  # one message for a file in a form this suite does not read
        errors += str(err).splitlines()
    # an unknown class, or a model_config value of the wrong type (already named with its line), would only be
    # reported again by building the model config
    if not any("'model.model_config.type'" in line or ("'model.model_config." in line and " takes " in line)
               for line in errors):
        errors += model_section_errors(config)
    errors += data_path_errors(config)
    if not errors:
        errors += launch_errors(config)
    if errors:
        raise ConfigError("\n".join(errors))
