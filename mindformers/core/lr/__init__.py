"""Learning-rate schedules (registered as LR), their upstream aliases and the builders the trainer uses."""
from .annealing import CosineAnnealingLR, CosineAnnealingWarmRestarts
from .build import LR_ALIASES, build_grouped_lr_schedule, build_lr_schedule
from .lr_schedule import (ConstantWarmUpLR, ConstantWithCoolDownLR, CosineWithRestartsAndWarmUpLR,
                          CosineWithWarmUpLR, LinearWithWarmUpLR, PolynomialWithWarmUpLR, StepSchedule,
                          WarmUpStableDecayLR)

__all__ = ["ConstantWarmUpLR", "ConstantWithCoolDownLR", "LinearWithWarmUpLR", "CosineWithWarmUpLR",
           "CosineWithRestartsAndWarmUpLR", "PolynomialWithWarmUpLR", "WarmUpStableDecayLR", "CosineAnnealingLR",
           "CosineAnnealingWarmRestarts", "StepSchedule", "LR_ALIASES", "build_lr_schedule",
           "build_grouped_lr_schedule"]
