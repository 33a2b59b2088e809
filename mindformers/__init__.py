"""MindFormers: a YAML-config-driven LLM training suite on MindSpore that runs CPU-first."""
__version__ = "0.1.0"

from . import core, dataset, evaluation, models, modules, tokenization, wrapper  # noqa: F401  (registers)
from .generation import GenerationConfig, generate, pipeline
from .config import MindFormerConfig, load_config
from .tokenization import AutoTokenizer
from .tools.register import MindFormerModuleType, MindFormerRegister, build_from_config
from .trainer import CausalLanguageModelingTrainer, Trainer, TrainingArguments

__all__ = ["MindFormerConfig", "load_config", "MindFormerModuleType", "MindFormerRegister", "build_from_config",
           "Trainer", "TrainingArguments", "CausalLanguageModelingTrainer", "GenerationConfig", "generate",
           "pipeline", "AutoTokenizer", "__version__"]
