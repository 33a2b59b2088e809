"""Schedules from YAML sections: upstream's string aliases, the planned total_steps, grouped_lr_schedule."""
from fnmatch import fnmatchcase
from typing import Dict, List, Mapping, Sequence, Tuple

from mindspore.nn.learning_rate_schedule import LearningRateSchedule

from mindformers.tools.register import MindFormerModuleType, MindFormerRegister, build_from_config

from .annealing import CosineAnnealingLR, CosineAnnealingWarmRestarts
from .lr_schedule import (ConstantWarmUpLR, CosineWithRestartsAndWarmUpLR, CosineWithWarmUpLR, LinearWithWarmUpLR,
                          PolynomialWithWarmUpLR)

__all__ = ["LR_ALIASES", "build_lr_schedule", "build_grouped_lr_schedule"]

# Upstream's Hugging Face style names (run_general_task.yaml's `type: polynomial`, TrainingArguments'
# lr_scheduler_type). Registered as aliases, so YAML, the schema check and build_from_config all take them.
LR_ALIASES = {
    "constant_with_warmup": ConstantWarmUpLR,
    "linear": LinearWithWarmUpLR,
    "cosine": CosineWithWarmUpLR,
    "cosine_with_restarts": CosineWithRestartsAndWarmUpLR,
    "polynomial": PolynomialWithWarmUpLR,
    "cosine_annealing": CosineAnnealingLR,
    "cosine_annealing_warm_restarts": CosineAnnealingWarmRestarts,
}
for _alias, _cls in LR_ALIASES.items():
    MindFormerRegister.register_cls(_cls, MindFormerModuleType.LR, alias=_alias)


def build_lr_schedule(cfg: Mapping, total_steps: int, where: str = "lr_schedule") -> LearningRateSchedule:
    """The schedule a `lr_schedule`-style section names; `total_steps: -1` (or none) becomes `total_steps`,
    the planned run, for schedules that take it."""
    if not isinstance(cfg, Mapping):
        raise ValueError(f"{where}: expected a mapping with a 'type' key, got {cfg!r}")
    cfg = dict(cfg)
    valid = MindFormerRegister.names(MindFormerModuleType.LR)
    if cfg.get("type") not in valid:
        raise ValueError(f"{where}.type: unknown LR schedule {cfg.get('type')!r} (valid: {', '.join(valid)})")
    if cfg.get("total_steps") in (None, -1):
        cfg.pop("total_steps", None)
    return build_from_config(cfg, MindFormerModuleType.LR, total_steps=int(total_steps))


def build_grouped_lr_schedule(section: Mapping, param_names: Sequence[str], total_steps: int
                              ) -> Tuple[LearningRateSchedule, List[Tuple[List[str], LearningRateSchedule]]]:
    """Upstream's `grouped_lr_schedule: {default: <schedule>, grouped: [{params: [patterns], <schedule>}, ...]}`.

    A parameter belongs to the group of the first pattern, in the order written, that is a substring of its
    name or matches it as a glob (`embedding.*`); the others follow `default`. Returns the default schedule
    and one (parameter names, schedule) pair per group, in the order of `grouped`.
    """
    where = "grouped_lr_schedule"
    if not isinstance(section, Mapping):
        raise ValueError(f"{where}: expected a mapping with 'default' and 'grouped', got {section!r}")
    unknown = sorted(set(section) - {"default", "grouped"})
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)} (valid: default, grouped)")
    if not section.get("default"):
        raise ValueError(f"{where}.default: missing (the schedule of every parameter no group matches)")
    default = build_lr_schedule(section["default"], total_steps, f"{where}.default")
    items = section.get("grouped") or []
    if not isinstance(items, (list, tuple)):
        raise ValueError(f"{where}.grouped: expected a list of schedules, each with 'params', got {items!r}")
    owner: Dict[str, int] = {}  # pattern -> group, in the order written
    schedules = []
    for i, item in enumerate(items):
        item = dict(item) if isinstance(item, Mapping) else {}
        patterns = item.pop("params", None)
        if not isinstance(patterns, (list, tuple)) or not patterns or not all(isinstance(p, str) for p in patterns):
            raise ValueError(f"{where}.grouped[{i}].params: expected a non-empty list of parameter-name patterns, "
                             f"got {patterns!r}")
        for pattern in patterns:
            if owner.setdefault(pattern, i) != i:
                raise ValueError(f"{where}.grouped[{i}].params: {pattern!r} is already in grouped[{owner[pattern]}]")
        schedules.append(build_lr_schedule(item, total_steps, f"{where}.grouped[{i}]"))
    members: List[List[str]] = [[] for _ in schedules]
    for name in param_names:
        group = next((i for pattern, i in owner.items() if pattern in name or fnmatchcase(name, pattern)), None)
        if group is not None:
            members[group].append(name)
    for i, names in enumerate(members):
        if not names:
            patterns = [p for p, g in owner.items() if g == i]
            raise ValueError(f"{where}.grouped[{i}].params: {patterns} match no trainable parameter "
                             f"(names look like {', '.join(list(param_names)[:3])})")
    return default, list(zip(members, schedules))
