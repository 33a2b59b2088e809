"""Training core: optimizers, learning-rate schedules, callbacks and the device context."""
from . import callback, lr, optim
from .context import build_context

__all__ = ["callback", "lr", "optim", "build_context"]
