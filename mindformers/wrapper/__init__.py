"""Train-step wrappers and loss scalers (registered as WRAPPER)."""
from .loss_scale import DynamicLossScaleUpdateCell, FixedLossScaleUpdateCell, build_loss_scaler
from .wrapper import MFPipelineWithLossScaleCell, MFTrainOneStepCell

__all__ = ["MFTrainOneStepCell", "MFPipelineWithLossScaleCell", "DynamicLossScaleUpdateCell",
           "FixedLossScaleUpdateCell", "build_loss_scaler"]
