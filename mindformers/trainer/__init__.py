"""Trainers."""
from .causal_lm import CausalLanguageModelingTrainer
from .trainer import Trainer
from .training_args import TrainingArguments

__all__ = ["Trainer", "TrainingArguments", "CausalLanguageModelingTrainer"]
