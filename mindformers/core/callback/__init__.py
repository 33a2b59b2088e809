"""Training callbacks."""
from .balance import TopkBiasBalanceCallback
from .callback import CallbackParams, CheckpointMonitor, MFLossMonitor, cpu_peak_flops, measure_cpu_peak_flops

__all__ = ["CallbackParams", "CheckpointMonitor", "MFLossMonitor", "TopkBiasBalanceCallback", "cpu_peak_flops",
           "measure_cpu_peak_flops"]
