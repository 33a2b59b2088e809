"""Optimizers (registered as OPTIMIZER) and parameter grouping."""
from .adamw import Adam, AdamW, FP32StateAdamWeightDecay
from .more import SGD, Adafactor, Lion
from .param_groups import get_optimizer_grouped_parameters

__all__ = ["Adam", "AdamW", "FP32StateAdamWeightDecay", "SGD", "Lion", "Adafactor",
           "get_optimizer_grouped_parameters"]
