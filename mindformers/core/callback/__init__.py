"""Training callbacks."""
from .callback import CallbackParams, CheckpointMonitor, MFLossMonitor, measure_cpu_peak_flops

__all__ = ["CallbackParams", "CheckpointMonitor", "MFLossMonitor", "measure_cpu_peak_flops"]
