"""Model families: the shared decoder parts (decoder.py), the model contract and loss (base.py), each family's
builder and config, and Hugging Face interop (hf/); importing this package registers their configs and models."""
from .base import BaseConfig, causal_lm_loss
from .glm4 import Glm4Config, Glm4ForCausalLM
from .llama import LlamaConfig, LlamaForCausalLM
from .mixtral import MixtralConfig, MixtralForCausalLM
from .qwen2 import Qwen2Config, Qwen2ForCausalLM
from .qwen3 import Qwen3Config, Qwen3ForCausalLM
from .qwen3_moe import Qwen3MoeConfig, Qwen3MoeForCausalLM
from .deepseek_v3 import DeepseekV3Config, DeepseekV3ForCausalLM

__all__ = ["BaseConfig", "causal_lm_loss", "Glm4Config", "Glm4ForCausalLM", "LlamaConfig", "LlamaForCausalLM",
           "MixtralConfig", "MixtralForCausalLM",
           "Qwen2Config", "Qwen2ForCausalLM", "Qwen3Config", "Qwen3ForCausalLM", "Qwen3MoeConfig",
           "Qwen3MoeForCausalLM", "DeepseekV3Config", "DeepseekV3ForCausalLM"]
