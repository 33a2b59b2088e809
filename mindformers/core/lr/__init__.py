"""Learning-rate schedules (registered as LR)."""
from .lr_schedule import (ConstantWarmUpLR, CosineWithRestartsAndWarmUpLR, CosineWithWarmUpLR, LinearWithWarmUpLR,
                          PolynomialWithWarmUpLR, WarmUpStableDecayLR)

__all__ = ["ConstantWarmUpLR", "LinearWithWarmUpLR", "CosineWithWarmUpLR", "CosineWithRestartsAndWarmUpLR",
           "PolynomialWithWarmUpLR", "WarmUpStableDecayLR"]
