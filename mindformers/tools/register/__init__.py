"""Component registry (upstream names)."""
from .register import MindFormerModuleType, MindFormerRegister, build_from_config, register_path

__all__ = ["MindFormerModuleType", "MindFormerRegister", "build_from_config", "register_path"]
