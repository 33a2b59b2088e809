"""Parameter-efficient finetuning (upstream `pet_config`): LoRA adapters, their files, merging."""
from .lora import (LoraConfig, LoRALinear, adapter_weights, apply_lora, has_lora, load_adapter, merge_lora,
                   save_adapter, trainable_summary)

__all__ = ["LoraConfig", "LoRALinear", "adapter_weights", "apply_lora", "has_lora", "load_adapter", "merge_lora",
           "save_adapter", "trainable_summary"]
