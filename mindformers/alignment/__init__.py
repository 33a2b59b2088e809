"""Preference alignment: DPO/IPO/SimPO losses and a pairwise reward model."""
from .preference import (LOSS_TYPES, PreferenceLoss, RewardModel, frozen_copy, preference_loss,
                         sequence_logprobs)

__all__ = ["LOSS_TYPES", "PreferenceLoss", "RewardModel", "frozen_copy", "preference_loss", "sequence_logprobs"]
