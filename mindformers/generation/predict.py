"""Predict: the decoding settings a run config gives, the prompts it names, and continuing them in batches."""
import logging
import os
from typing import List

from ..config import plain
from ..tools.paths import resolve_repo_path
from .config import GenerationConfig
from .generate import generate

logger = logging.getLogger("mindformers")


# generation keys upstream keeps in model_config (read when the YAML sets them there), by GenerationConfig name
MODEL_CONFIG_GENERATION_KEYS = {"do_sample": "do_sample", "top_k": "top_k", "top_p": "top_p",
                                "repetition_penalty": "repetition_penalty", "max_decode_length": "max_length"}


def predict_generation_config(config):
    """Decoding settings, each layer over the one before: `pretrained_model_dir`/generation_config.json, the
    generation keys the YAML sets in `model.model_config` (upstream's place for them), the `generation_config`
    section."""
    model_cfg = (config.get("model") or {}).get("model_config") or {}
    from_model = {ours: model_cfg[key] for key, ours in MODEL_CONFIG_GENERATION_KEYS.items() if key in model_cfg}
    yaml_keys = {**from_model, **plain(config.get("generation_config") or {})}
    model_dir = config.get("pretrained_model_dir")
    if model_dir:
        model_dir = resolve_repo_path(model_dir, "pretrained_model_dir")
        if os.path.isfile(os.path.join(model_dir, "generation_config.json")):
            base = GenerationConfig.read_pretrained(model_dir)
            logger.info("generation defaults from %s/generation_config.json: %s; the YAML sets %s", model_dir,
                        base, yaml_keys or "nothing")
            return GenerationConfig.from_pretrained(model_dir, **yaml_keys)
    return GenerationConfig.from_dict(yaml_keys)


def read_prompts(data) -> List[str]:
    """Prompts from `--predict_data`/`input_data`: a string, a list, or one file with a prompt per line."""
    if data is None or data == []:
        raise ValueError("predict needs prompts: --predict_data 'text' ... or a file with one prompt per line")
    items = [data] if isinstance(data, str) else list(data)
    if len(items) == 1 and os.path.isfile(items[0]):
        with open(items[0], encoding="utf-8") as f:
            items = [line.rstrip("\n") for line in f if line.strip()]
        if not items:
            raise ValueError(f"--predict_data {data[0] if isinstance(data, list) else data}: the file is empty")
    return items


def continue_prompts(network, tokenizer, prompts: List[str], gen: GenerationConfig, batch_size: int) -> List[str]:
    """The decoded continuation of each prompt, generated `batch_size` prompts at a time; each printed as it
    is done (`'prompt' -> 'continuation'`)."""
    outputs = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start:start + batch_size]
        for prompt, ids in zip(batch, generate(network, batch, gen, tokenizer=tokenizer)):
            text = tokenizer.decode(ids, skip_special_tokens=True)
            outputs.append(text)
            print(f"{prompt!r} -> {text!r}", flush=True)
    return outputs
