"""Train-step wrappers and loss scalers (registered as WRAPPER)."""
from .loss_scale import DynamicLossScaleUpdateCell, FixedLossScaleUpdateCell, build_loss_scaler
from .wrapper import MFTrainOneStepCell

__all__ = ["MFTrainOneStepCell", "DynamicLossScaleUpdateCell", "FixedLossScaleUpdateCell", "build_loss_scaler"]
