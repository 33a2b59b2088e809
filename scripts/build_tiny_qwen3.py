"""Build mindformers/assets/tiny_qwen3/: a tiny Qwen3 Hugging Face directory this repository owns.

    python scripts/build_tiny_qwen3.py

configs/qwen3/pretrain_qwen3_tiny.yaml made smaller (2 layers, hidden 128, heads 4/2 of width 32, 256 positions,
vocab 2,048: 0.9M parameters), pretrained for one epoch on the tiny corpus (seed 0, about a minute on 2 cores),
saved with save_pretrained in bfloat16 (config.json + model.safetensors, 1.8 MB) beside the tiny sentencepiece
tokenizer. configs/qwen3/finetune_qwen3.yaml finetunes it in
upstream's 2.x YAML form.
"""
import json
import os
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "mindformers", "assets", "tiny_qwen3")
TOKENIZER = os.path.join(ROOT, "mindformers", "assets", "tiny_corpus", "tokenizer.model")


def main() -> int:
    sys.path.insert(0, ROOT)
    from mindformers import Trainer
    from mindformers.config import load_config
    from mindformers.models.hf import save_pretrained
    from mindformers.trainer.builders import build_model

    os.chdir(ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config("configs/qwen3/pretrain_qwen3_tiny.yaml",
                             {"runner_config.epochs": 1, "output_dir": tmp, "model.model_config.hidden_size": 128,
                              "model.model_config.num_layers": 2, "model.model_config.num_heads": 4,
                              "model.model_config.n_kv_heads": 2, "model.model_config.head_dim": 32,
                              "model.model_config.intermediate_size": 344, "model.model_config.seq_length": 256,
                              "model.model_config.max_position_embedding": 256,
                              "callbacks": [{"type": "MFLossMonitor", "per_print_times": 50}]})
        network = build_model(config)
        history = Trainer(args=config, model=network).train()
        print(f"pretrained {len(history)} steps: loss {history[0]['loss']:.3f} -> {history[-1]['loss']:.3f}")
    shutil.rmtree(OUT, ignore_errors=True)
    save_pretrained(network, OUT, dtype="bfloat16")
    shutil.copy(TOKENIZER, os.path.join(OUT, "tokenizer.model"))
    with open(os.path.join(OUT, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
                   "unk_token": "<unk>", "pad_token": None, "add_bos_token": True, "add_eos_token": False}, f,
                  indent=2)
    print(f"wrote {OUT}: {sorted(os.listdir(OUT))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
