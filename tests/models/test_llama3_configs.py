"""Real-size Llama configs: shipped YAMLs produce the published parameter counts."""
from family_checks import build_from_yaml


def test_llama3_8b_has_published_size():
    config, arch = build_from_yaml("llama/predict_llama3_8b.yaml")
    assert arch == "LlamaForCausalLM"
    assert config.num_params() == 8_030_261_248  # Meta-Llama-3-8B safetensors total
