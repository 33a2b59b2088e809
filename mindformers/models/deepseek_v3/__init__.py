"""DeepSeek-V3: MLA attention with MoE blocks of shared and routed experts (importing registers them, also as
the Hugging Face model_type "deepseek_v3")."""
from .deepseek_v3 import DeepseekV3Config, DeepseekV3ForCausalLM
from . import hf  # noqa: F401  (registers the HF family)

__all__ = ["DeepseekV3Config", "DeepseekV3ForCausalLM"]
