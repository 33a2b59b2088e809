"""Optimizers (registered as OPTIMIZER) and parameter grouping."""
from .adamw import AdamW, FP32StateAdamWeightDecay
from .param_groups import get_optimizer_grouped_parameters

__all__ = ["AdamW", "FP32StateAdamWeightDecay", "get_optimizer_grouped_parameters"]
