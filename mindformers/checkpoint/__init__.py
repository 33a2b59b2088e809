"""Checkpoint save/load (safetensors)."""
from .checkpoint import (find_resume_checkpoint, list_checkpoints, load_train_state, load_weights, prune_checkpoints,
                         read_state, read_weights, resolve_checkpoint, save_checkpoint, snapshot,
                         write_checkpoint)

__all__ = ["snapshot", "write_checkpoint", "find_resume_checkpoint", "load_train_state", "read_state",
           "save_checkpoint", "load_weights", "list_checkpoints", "prune_checkpoints", "read_weights",
           "resolve_checkpoint"]
