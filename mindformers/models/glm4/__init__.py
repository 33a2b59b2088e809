"""GLM-4 dense models (THUDM/GLM-4-9B-0414): sandwich norms, partial interleaved RoPE, fused gate_up_proj
(importing registers them, also as Hugging Face model_type "glm4")."""
from .glm4 import Glm4Config, Glm4ForCausalLM
from . import hf  # noqa: F401  (registers the HF family)

__all__ = ["Glm4Config", "Glm4ForCausalLM"]
