"""Weights and run checkpoints: the one weight loader (weights.py: safetensors, .ckpt, PyTorch pickles, sharded
run checkpoints into a network), atomic save of training runs (checkpoint.py) and their resume (resume.py),
per-rank shards (sharded.py) and the file formats (safetensors_io.py, torch_pickle.py)."""
from .checkpoint import (list_checkpoints, prune_checkpoints, read_state, resolve_checkpoint, save_checkpoint, snapshot,
                         write_checkpoint)
from .resume import find_resume_checkpoint, load_train_state
from .weights import assign_weights, load_weights, read_weights

__all__ = ["snapshot", "write_checkpoint", "find_resume_checkpoint", "load_train_state", "read_state",
           "save_checkpoint", "load_weights", "assign_weights", "list_checkpoints", "prune_checkpoints",
           "read_weights", "resolve_checkpoint"]
