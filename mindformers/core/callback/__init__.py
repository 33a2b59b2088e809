"""Training callbacks."""
from .callback import CallbackParams, CheckpointMonitor, MFLossMonitor, cpu_peak_flops, measure_cpu_peak_flops

__all__ = ["CallbackParams", "CheckpointMonitor", "MFLossMonitor", "cpu_peak_flops", "measure_cpu_peak_flops"]
