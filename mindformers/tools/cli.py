"""Command line of run_mindformer.py: upstream flag names, plus `--a.b.c value` config overrides."""
import argparse
import sys
from typing import List, Optional, Tuple

from ..config.loader import ConfigError, parse_value

RUN_MODES = ("train", "finetune", "eval", "predict")

# flag -> dotted config key it sets (upstream semantics)
FLAG_TO_KEY = {
    "run_mode": "run_mode",
    "use_parallel": "use_parallel",
    "load_checkpoint": "load_checkpoint",
    "load_ckpt_format": "load_ckpt_format",
    "resume_training": "resume_training",
    "output_dir": "output_dir",
    "device_target": "context.device_target",
    "device_id": "context.device_id",
    "mode": "context.mode",
    "train_dataset_dir": "train_dataset.data_loader.dataset_dir",
    "eval_dataset_dir": "eval_dataset.data_loader.dataset_dir",
    "predict_batch_size": "predict_batch_size",
    "seed": "seed",
    "pretrained_model_dir": "pretrained_model_dir",
    "auto_trans_ckpt": "auto_trans_ckpt",
    "src_strategy_path_or_dir": "src_strategy_path_or_dir",
    "only_save_strategy": "only_save_strategy",
    "epochs": "runner_config.epochs",
    "batch_size": "runner_config.batch_size",
    "gradient_accumulation_steps": "runner_config.gradient_accumulation_steps",
    "sink_mode": "runner_config.sink_mode",
    "do_eval": "do_eval",
    "remote_save_url": "remote_save_url",
    "merge_lora": "merge_lora",
    "use_chat_template": "generation_config.use_chat_template",
}


def _bool(text: str) -> bool:
    value = parse_value(text)
    if not isinstance(value, bool):
        raise argparse.ArgumentTypeError(f"expected True or False, got '{text}'")
    return value


def _bool_or_str(text: str):
    value = parse_value(text)
    return value if isinstance(value, bool) else text


class _Parser(argparse.ArgumentParser):
    """argparse with a bad flag reported as one `error:` line (exit 2), like every other bad input."""

    def error(self, message: str):
        self.exit(2, f"error: command line: {message} (python {self.prog} --help lists the flags)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser with upstream's flag names."""
    p = _Parser(
        prog="run_mindformer.py",
        description="Train, finetune, evaluate or run inference from a YAML config. Any config key can also "
                    "be set as --a.b.c VALUE (typed as YAML: true, 1e-5, [1,2]).",
        allow_abbrev=False)
    p.add_argument("--config", required=True, help="YAML config file")
    p.add_argument("--run_mode", choices=RUN_MODES, help="what to run (overrides run_mode in the YAML)")
    p.add_argument("--use_parallel", type=_bool, help="use MindSpore's distributed engine (launch with msrun)")
    p.add_argument("--load_checkpoint", help="checkpoint file or directory to load")
    p.add_argument("--load_ckpt_format", choices=("safetensors", "ckpt"))
    p.add_argument("--resume_training", type=_bool_or_str,
                   help="True to resume from the latest checkpoint in load_checkpoint, or a checkpoint name")
    p.add_argument("--output_dir", help="directory for logs and checkpoints")
    p.add_argument("--device_target", choices=("CPU", "GPU", "Ascend"))
    p.add_argument("--device_id", type=int)
    p.add_argument("--mode", type=int, choices=(0, 1), help="0 = GRAPH_MODE, 1 = PYNATIVE_MODE")
    p.add_argument("--train_dataset_dir", help="sets train_dataset.data_loader.dataset_dir")
    p.add_argument("--eval_dataset_dir", help="sets eval_dataset.data_loader.dataset_dir")
    p.add_argument("--predict_data", nargs="+", help="prompt text(s), or a file with one prompt per line")
    p.add_argument("--predict_batch_size", type=int)
    p.add_argument("--use_chat_template", type=_bool,
                   help="predict: send each prompt as a user turn in the tokenizer's chat template")
    p.add_argument("--seed", type=int)
    p.add_argument("--pretrained_model_dir")
    p.add_argument("--auto_trans_ckpt", type=_bool)
    p.add_argument("--src_strategy_path_or_dir")
    p.add_argument("--only_save_strategy", type=_bool)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch_size", type=int)
    p.add_argument("--gradient_accumulation_steps", type=int)
    p.add_argument("--sink_mode", type=_bool)
    p.add_argument("--do_eval", type=_bool)
    p.add_argument("--remote_save_url")
    p.add_argument("--merge_lora", type=_bool,
                   help="eval/predict: fold LoRA adapters (model_config.pet_config) into the base weights first")
    p.add_argument("--register_path", action="append", default=[],
                   help="file or directory of user modules that register components (repeatable)")
    p.add_argument("--options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="config overrides, e.g. --options runner_config.epochs=2 optimizer.eps=1e-6")
    p.add_argument("--print_config", action="store_true", help="print the fully resolved YAML and exit")
    p.add_argument("--validate", action="store_true", help="check the config and exit")
    return p


def split_overrides(argv: List[str]) -> Tuple[List[str], List[str]]:
    """Separate `--a.b.c value` / `--a.b.c=value` overrides from the known flags."""
    known, overrides = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name = arg[2:].split("=", 1)[0] if arg.startswith("--") else ""
        if "." in name:
            if "=" in arg:
                overrides.append(arg[2:])
            elif i + 1 < len(argv):
                overrides.append(f"{name}={argv[i + 1]}")
                i += 1
            else:
                raise ConfigError(f"command line: '{arg}' needs a value")
        else:
            known.append(arg)
        i += 1
    return known, overrides


def parse_args(argv: Optional[List[str]] = None):
    """Parse argv into (namespace, overrides as 'a.b=value' strings in the order they apply)."""
    argv = sys.argv[1:] if argv is None else argv
    known, dotted = split_overrides(argv)
    args = build_parser().parse_args(known)
    overrides = []
    for flag, key in FLAG_TO_KEY.items():
        value = getattr(args, flag)
        if value is not None:
            overrides.append((key, value))
    for item in list(args.options) + dotted:
        if "=" not in item:
            raise ConfigError(f"command line: override '{item}' must look like key.path=value")
        key, value = item.split("=", 1)
        overrides.append((key.strip(), parse_value(value)))
    return args, overrides
