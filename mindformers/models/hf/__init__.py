"""Hugging Face interoperability: load/save HF model directories and import GGUF files."""
from .families import HF_FAMILIES, HFFamily, llama_from_hf, llama_to_hf, register_hf_family
from .loading import load_state_dict
from .pretrained import (config_from_hf, config_from_section, from_pretrained, hf_config_dict, load_hf_weights,
                         model_class_for, read_hf_config, save_pretrained, section_problems,
                         supported_model_types)
from ...checkpoint.safetensors_io import read_safetensors, read_weights_dir, write_safetensors
from .tokenizer import tokenizer_from_hf

__all__ = ["HF_FAMILIES", "HFFamily", "llama_from_hf", "llama_to_hf", "register_hf_family", "config_from_hf",
           "config_from_section", "section_problems", "from_pretrained", "hf_config_dict", "load_hf_weights",
           "load_state_dict", "model_class_for", "read_hf_config", "save_pretrained", "supported_model_types",
           "read_safetensors", "read_weights_dir", "write_safetensors", "tokenizer_from_hf"]
