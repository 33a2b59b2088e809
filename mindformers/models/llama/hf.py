"""Hugging Face interop for Llama (model_type "llama"): config.json keys both ways; tensor names are HF's already."""
from ..hf.families import fixed_head_dim_from_hf, llama_to_hf, register_hf_family
from .llama import LlamaForCausalLM
from .llama_config import LlamaConfig

register_hf_family("llama", ("LlamaForCausalLM",), LlamaConfig, LlamaForCausalLM, fixed_head_dim_from_hf,
                   llama_to_hf)
