"""Value types of config keys: a registered component's keys against its constructor's annotations, the plain
sections' keys (runner_config, parallel_config, context, ...) against PLAIN_TYPES; checked before any work, so a
`batch_size: two` is a file:line error instead of a bare `int()` failure deep in the run."""
import inspect
import typing
from typing import Any, Dict, List, Optional, Tuple, Union

# keys of the plain (untyped) sections and top-level scalars: dotted path -> annotation; `*_dataset` stands for
# train_dataset and eval_dataset
PLAIN_TYPES: Dict[str, Any] = {
    **{k: int for k in ("seed", "predict_batch_size", "eval_step_interval", "eval_epoch_interval", "device_num",
                        "profile_start_step", "profile_stop_step")},
    **{k: Optional[int] for k in ("data_skip_steps",)},
    **{k: bool for k in ("use_parallel", "do_eval", "ignore_data_skip", "auto_trans_ckpt", "merge_lora",
                         "allow_pickle_checkpoint", "resume_by_last_timestamp_ckpt", "train_precision_sync",
                         "infer_precision_sync", "profile", "print_separate_loss")},
    **{k: str for k in ("run_mode", "output_dir", "load_checkpoint", "load_ckpt_format", "pretrained_model_dir")},
    "resume_training": Union[bool, str],
    **{f"runner_config.{k}": int for k in ("epochs", "batch_size", "gradient_accumulation_steps", "stop_step")},
    **{f"*_dataset.{k}": int for k in ("batch_size", "num_parallel_workers", "repeat", "seed", "divisor",
                                        "remainder", "eod_token_id")},
    **{f"*_dataset.{k}": bool for k in ("drop_remainder", "dynamic_batch", "eod_reset")},
    **{f"*_dataset.{k}": Union[List[str], str] for k in ("input_columns", "output_columns", "column_order")},
    **{f"context.{k}": int for k in ("mode", "device_id", "max_call_depth", "runtime_num_threads")},
    **{f"context.{k}": str for k in ("device_target", "save_graphs_path", "compile_cache_path")},
    **{f"context.{k}": bool for k in ("enable_compile_cache", "pynative_synchronize", "precompile_only")},
    "context.jit_config": dict,
    "parallel.parallel_mode": Union[int, str],
    **{f"parallel.{k}": bool for k in ("gradients_mean", "full_batch", "enable_parallel_optimizer",
                                       "enable_alltoall", "loss_repeated_mean", "gradient_fp32_sync")},
    "parallel.device_num": int,
    **{f"parallel_config.{k}": int for k in ("data_parallel", "model_parallel", "pipeline_stage",
                                             "micro_batch_num")},
    **{f"parallel_config.{k}": bool for k in ("vocab_emb_dp", "optimizer_shard")},
    **{f"generation_config.{k}": int for k in ("max_length", "max_new_tokens", "min_new_tokens", "top_k",
                                               "num_beams", "seed")},
    **{f"generation_config.{k}": float for k in ("temperature", "top_p", "repetition_penalty", "length_penalty")},
    **{f"generation_config.{k}": bool for k in ("do_sample", "use_past")},
    **{f"preference.{k}": float for k in ("beta", "gamma", "label_smoothing")},
    "preference.loss_type": str,
}


def plain_type(path: Tuple) -> Any:
    """The declared type of a plain key at `path`, or None (not declared: anything goes)."""
    dotted = ".".join(str(p) for p in path)
    if path and str(path[0]) in ("train_dataset", "eval_dataset"):
        dotted = "*_dataset" + dotted[len(str(path[0])):]
    return PLAIN_TYPES.get(dotted)


def annotations(obj) -> Dict[str, Any]:
    """Argument annotations of a class's constructor (and of this package's bases it passes **kwargs to)."""
    targets = [vars(c)["__init__"] for c in obj.__mro__ if "__init__" in vars(c)
               and (c is obj or c.__module__.startswith("mindformers."))] if inspect.isclass(obj) else [obj]
    found: Dict[str, Any] = {}
    for target in reversed(targets):  # the class's own annotation wins over its bases'
        try:
            hints = typing.get_type_hints(target)
        except Exception:  # noqa: BLE001 - an unresolvable forward reference: use the raw annotations
            hints = getattr(target, "__annotations__", {}) or {}
        found.update({k: v for k, v in hints.items() if k != "return"})
    return found


_NAMES = {int: "an int", float: "a number", bool: "True or False", str: "a string", dict: "a mapping",
          list: "a list", tuple: "a list", bytes: "bytes", type(None): "null"}
_SEQUENCES = (list, tuple, typing.Sequence, typing.Iterable, typing.List, typing.Tuple)


def describe(annotation) -> str:
    """`annotation` in words: 'an int', 'null or a number', 'a list of strings'."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Union:
        return " or ".join(dict.fromkeys(describe(a) for a in sorted(args, key=lambda a: a is not type(None))))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple) or _is_abc_sequence(origin):
        items = [a for a in args if a is not Ellipsis]
        return f"a list of {describe(items[0]).split(' ', 1)[-1]}s" if items and items[0] in _NAMES else "a list"
    if origin in (dict,) or annotation in (dict, Dict):
        return "a mapping"
    return _NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _is_abc_sequence(origin) -> bool:
    import collections.abc as abc
    return origin in (abc.Sequence, abc.Iterable, abc.MutableSequence)


def fits(value, annotation) -> bool:
    """Whether a YAML value can be `annotation`; an annotation naming something YAML cannot write (a Cell, a
    Tensor) accepts anything, the constructor decides."""
    if annotation in (inspect.Parameter.empty, Any, object, None):
        return True
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Union:
        return any(fits(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation in (str, bytes, dict):
        return isinstance(value, annotation)
    if origin is dict or annotation is Dict:
        return isinstance(value, dict)
    if annotation in (list, tuple) or origin in (list, tuple) or _is_abc_sequence(origin):
        if not isinstance(value, (list, tuple)):
            return False
        items = [a for a in args if a is not Ellipsis]
        return len(items) != 1 or all(fits(v, items[0]) for v in value)
    return True


def type_problem(value, annotation, dotted: str, where: str) -> Optional[str]:
    """One error line if `value` (set at `where`) cannot be `annotation`, else None."""
    if value is None or fits(value, annotation):
        return None
    given = _NAMES.get(type(value), type(value).__name__)
    return f"{where}: '{dotted}': {value!r} is {given} ({dotted.rsplit('.', 1)[-1]} takes {describe(annotation)})"
