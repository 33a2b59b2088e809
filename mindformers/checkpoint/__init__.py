"""Checkpoint save/load (safetensors)."""
from .checkpoint import (list_checkpoints, load_weights, prune_checkpoints, read_weights, resolve_checkpoint,
                         save_checkpoint)

__all__ = ["save_checkpoint", "load_weights", "list_checkpoints", "prune_checkpoints", "read_weights",
           "resolve_checkpoint"]
