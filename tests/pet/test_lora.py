"""LoRA: config checks, only adapters train, merge keeps outputs, adapter files round-trip, trainer integration."""
import json
import os

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor
from safetensors.numpy import load_file

from mindformers.checkpoint import save_checkpoint
from mindformers.config import load_config
from mindformers.core.optim import AdamW
from mindformers.models import LlamaConfig, LlamaForCausalLM
from mindformers.pet import LoraConfig, apply_lora, load_adapter, merge_lora, save_adapter
from mindformers.trainer.builders import build_model
from mindformers.trainer.causal_lm import CausalLanguageModelingTrainer
from mindformers.wrapper import MFTrainOneStepCell

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = dict(hidden_size=32, num_layers=2, num_heads=4, n_kv_heads=2, vocab_size=64, intermediate_size=48,
            seq_length=16)
PET = {"pet_type": "lora", "lora_rank": 4, "lora_alpha": 8, "target_modules": r".*\.(q_proj|v_proj|down_proj)"}
IDS = np.random.default_rng(0).integers(0, 64, (2, 17)).astype(np.int32)

pytestmark = pytest.mark.usefixtures("graph_mode")


def tiny(seed=0):
    ms.set_seed(seed)
    net = LlamaForCausalLM(LlamaConfig(**TINY))
    net.set_train(False)
    return net


def logits(net):
    net.set_train(False)
    return net(Tensor(IDS[:, :-1])).asnumpy()


def train(net, steps=8):
    step = MFTrainOneStepCell(net, AdamW(net.trainable_params(), learning_rate=1e-2))
    step.set_train(True)
    return [float(step(Tensor(IDS))[0].asnumpy()) for _ in range(steps)]


@pytest.mark.parametrize("cfg, message", [
    ({"lora_rnk": 4}, r"pet_config: unknown keys \['lora_rnk'\]"),
    ({"lora_rank": 0}, r"lora_rank must be an int >= 1, got 0"),
    ({"target_modules": "(q_proj"}, r"target_modules '\(q_proj' is not a valid regex"),
    ({"pet_type": "qlora"}, r"pet_type 'qlora' is not supported: quantized .* no MindSpore CPU kernels"),
    ({"lora_dropout": 1.0}, r"lora_dropout must be in \[0, 1\)"),
])
def test_config_errors(cfg, message):
    with pytest.raises(ValueError, match=message):
        LoraConfig.from_config(cfg)
    with pytest.raises(ValueError, match=message):
        LlamaConfig(**TINY, pet_config=cfg)  # the model config checks it when the YAML is built


def test_only_adapters_train_and_start_from_the_base_model():
    net = tiny()
    base = logits(net)
    frozen = {p.name: p.asnumpy().copy() for p in net.get_parameters()}
    paths = apply_lora(net, PET)
    assert paths == [f"model.layers.{i}.{m}" for i in range(2) for m in ("self_attn.q_proj", "self_attn.v_proj",
                                                                         "mlp.down_proj")]
    trainable = sorted(p.name for p in net.trainable_params())
    assert trainable == sorted(f"{p}.lora_{ab}.weight" for p in paths for ab in "AB")
    np.testing.assert_array_equal(logits(net), base)  # B starts at zero
    with pytest.raises(ValueError, match=r"target_modules '.\*nope' matches no Linear layer"):
        apply_lora(tiny(), {"target_modules": ".*nope"})
    losses = train(net)
    assert losses[-1] < losses[0] - 0.05
    for p in net.get_parameters():
        if p.name in frozen:
            np.testing.assert_array_equal(p.asnumpy(), frozen[p.name])  # base weights untouched
    assert np.abs(logits(net) - base).max() > 1e-3


def test_merge_gives_the_same_outputs_and_plain_layers():
    net = tiny()
    apply_lora(net, PET)
    train(net, 4)
    adapted = logits(net)
    assert merge_lora(net) == 6
    assert not any(".lora_" in p.name for p in net.get_parameters())
    assert len(net.trainable_params()) == len(list(net.get_parameters()))
    np.testing.assert_allclose(logits(net), adapted, atol=1e-5, rtol=0)


def test_adapter_files_round_trip_in_peft_layout(tmp_path):
    net = tiny()
    apply_lora(net, PET)
    train(net, 4)
    save_adapter(net, tmp_path / "adapter")
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert (cfg["peft_type"], cfg["r"], cfg["lora_alpha"]) == ("LORA", 4, 8)
    assert cfg["target_modules"] == ["down_proj", "q_proj", "v_proj"]
    names = sorted(load_file(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert names[0] == "base_model.model.model.layers.0.mlp.down_proj.lora_A.weight" and len(names) == 12
    fresh = tiny()  # same seed: the same base weights
    load_adapter(fresh, str(tmp_path / "adapter"))
    np.testing.assert_array_equal(logits(fresh), logits(net))
    other = LlamaForCausalLM(LlamaConfig(**{**TINY, "hidden_size": 16, "num_heads": 2, "n_kv_heads": 1}))
    with pytest.raises(ValueError, match=r"has shape \(4, 32\), the model needs \(4, 16\)"):
        load_adapter(other, str(tmp_path / "adapter"))


def test_trainer_lora_finetune_then_predict_with_adapter_and_merge(tmp_path):
    yaml = os.path.join(ROOT, "configs/llama/finetune_llama_tiny_lora.yaml")
    overrides = {"output_dir": str(tmp_path / "ft"), "load_checkpoint": str(tmp_path / "base"),
                 "runner_config.stop_step": 3, "runner_config.batch_size": 2,
                 "callbacks": [{"type": "MFLossMonitor"}, {"type": "CheckpointMonitor", "prefix": "ft",
                                                          "save_checkpoint_steps": 3}]}
    config = load_config(yaml, overrides)
    config.model.model_config = {**dict(config.model.model_config), "seq_length": 32, "num_layers": 2,
                                 "hidden_size": 32, "num_heads": 4, "n_kv_heads": 2, "intermediate_size": 48,
                                 "vocab_size": 2048}
    ms.set_seed(0)
    base = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in config.model.model_config.items()
                                           if k not in ("type", "pet_config")}))
    save_checkpoint(str(tmp_path / "base"), "base", 1, base)
    history = CausalLanguageModelingTrainer().train(config, is_finetune=True)
    assert len(history) == 3 and all(np.isfinite(r["loss"]) for r in history)
    assert sorted(os.listdir(tmp_path / "ft" / "adapter")) == ["adapter_config.json", "adapter_model.safetensors"]
    saved = load_file(tmp_path / "ft" / "checkpoint" / "ft-step3" / "model.safetensors")
    assert "model.layers.0.self_attn.q_proj.lora_B.weight" in saved
    np.testing.assert_array_equal(saved["model.layers.1.mlp.up_proj.weight"],
                                  base.parameters_dict()["model.layers.1.mlp.up_proj.weight"].asnumpy())

    # base checkpoint + adapter directory, separate and merged, give the same logits
    model_config = {k: v for k, v in config.model.model_config.items() if k != "pet_config"}
    predict = load_config(yaml, {"load_checkpoint": str(tmp_path / "base")})
    predict.model.model_config = {**model_config, "pet_config": {"adapter_dir": str(tmp_path / "ft" / "adapter")}}
    with_adapter = build_model(predict)
    assert len([p for p in with_adapter.get_parameters() if ".lora_" in p.name]) == 16
    predict.merge_lora = True
    merged = build_model(predict)
    assert not any(".lora_" in p.name for p in merged.get_parameters())
    np.testing.assert_allclose(logits(merged), logits(with_adapter), atol=1e-5, rtol=0)
    # resuming the LoRA run's own checkpoint restores adapters too
    again = load_config(yaml, {"load_checkpoint": str(tmp_path / "ft" / "checkpoint")})
    again.model.model_config = dict(config.model.model_config)
    np.testing.assert_array_equal(logits(build_model(again)), logits(with_adapter))
    with pytest.raises(ValueError, match="merge_lora: True applies to eval and predict"):
        CausalLanguageModelingTrainer().train(load_config(yaml, {"merge_lora": True}), is_finetune=True)
