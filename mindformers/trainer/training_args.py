"""TrainingArguments: notebook-friendly training settings that map onto the YAML config keys."""
import copy
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Union

from ..config import MindFormerConfig, load_config, validate_config

# field -> dotted YAML key it sets
_KEYS = {
    "output_dir": "output_dir",
    "seed": "seed",
    "num_train_epochs": "runner_config.epochs",
    "per_device_train_batch_size": "runner_config.batch_size",
    "gradient_accumulation_steps": "runner_config.gradient_accumulation_steps",
    "max_steps": "runner_config.stop_step",
    "optim": "optimizer.type",
    "adam_betas": "optimizer.betas",
    "adam_epsilon": "optimizer.eps",
    "weight_decay": "optimizer.weight_decay",
    "lr_scheduler_type": "lr_schedule.type",
    "learning_rate": "lr_schedule.learning_rate",
    "lr_end": "lr_schedule.lr_end",
    "warmup_steps": "lr_schedule.warmup_steps",
    "warmup_ratio": "lr_schedule.warmup_ratio",
    "max_grad_norm": "runner_wrapper.max_grad_norm",
    "use_clip_grad": "runner_wrapper.use_clip_grad",
    "loss_scale": "runner_wrapper.scale_sense",
    "do_eval": "do_eval",
    "eval_steps": "eval_step_interval",
    "per_device_eval_batch_size": "eval_dataset.batch_size",
    "load_checkpoint": "load_checkpoint",
    "resume_from_checkpoint": "resume_training",
    "use_parallel": "use_parallel",
    "device_target": "context.device_target",
    "mode": "context.mode",
}

_CALLBACK_KEYS = {"logging_steps": ("MFLossMonitor", "per_print_times"),
                  "save_steps": ("CheckpointMonitor", "save_checkpoint_steps"),
                  "save_total_limit": ("CheckpointMonitor", "keep_checkpoint_max"),
                  "save_prefix": ("CheckpointMonitor", "prefix")}


@dataclass
class TrainingArguments:
    """Training settings by the names HF users know; `to_config()` turns the set ones into YAML keys.

    Fields left at None keep the YAML's value (or the suite's default when there is no YAML).
    """

    output_dir: Optional[str] = None
    seed: Optional[int] = None
    num_train_epochs: Optional[int] = None
    per_device_train_batch_size: Optional[int] = None
    gradient_accumulation_steps: Optional[int] = None
    max_steps: Optional[int] = None
    optim: Optional[str] = None
    adam_betas: Optional[tuple] = None
    adam_epsilon: Optional[float] = None
    weight_decay: Optional[float] = None
    lr_scheduler_type: Optional[str] = None
    learning_rate: Optional[float] = None
    lr_end: Optional[float] = None
    warmup_steps: Optional[int] = None
    warmup_ratio: Optional[float] = None
    max_grad_norm: Optional[float] = None
    use_clip_grad: Optional[bool] = None
    loss_scale: Optional[Union[float, Dict[str, Any]]] = None
    do_eval: Optional[bool] = None
    eval_steps: Optional[int] = None
    per_device_eval_batch_size: Optional[int] = None
    load_checkpoint: Optional[str] = None
    resume_from_checkpoint: Optional[Union[bool, str]] = None
    use_parallel: Optional[bool] = None
    device_target: Optional[str] = None
    mode: Optional[int] = None
    logging_steps: Optional[int] = None
    save_steps: Optional[int] = None
    save_total_limit: Optional[int] = None
    save_prefix: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)  # any other dotted YAML keys

    def to_config(self, base: Optional[MindFormerConfig] = None) -> MindFormerConfig:
        """`base` (or the suite's defaults) with every set field applied."""

        if base is None:
            base = load_config(os.path.join(os.path.dirname(__file__), "default_training.yaml"))
        cfg = copy.deepcopy(base)
        updates = {key: getattr(self, name) for name, key in _KEYS.items() if getattr(self, name) is not None}
        if "optimizer.betas" in updates:
            updates["optimizer.betas"] = list(updates["optimizer.betas"])
        updates.update(self.extra)
        # warm-up is given as steps or as a ratio, never both: setting one drops the other from the base
        for key, other in (("warmup_steps", "warmup_ratio"), ("warmup_ratio", "warmup_steps")):
            if f"lr_schedule.{key}" in updates and cfg.get("lr_schedule"):
                cfg.lr_schedule.pop(other, None)
        cfg.merge_from_dict(updates)
        callbacks = list(cfg.get("callbacks") or [])
        for name, (cb_type, key) in _CALLBACK_KEYS.items():
            value = getattr(self, name)
            if value is None:
                continue
            match = next((c for c in callbacks if c.get("type") == cb_type), None)
            if match is None:
                match = MindFormerConfig(type=cb_type)
                callbacks.append(match)
            match[key] = value
        cfg.callbacks = callbacks
        validate_config(cfg)
        return cfg

    @classmethod
    def fields(cls):
        """Names of the settings this class maps."""
        return [f.name for f in dataclasses.fields(cls)]
