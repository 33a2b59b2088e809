"""Trainers."""
from .causal_lm import CausalLanguageModelingTrainer
from .trainer import Trainer

__all__ = ["Trainer", "CausalLanguageModelingTrainer"]
