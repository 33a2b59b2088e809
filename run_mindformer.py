"""Run a MindFormers config: python run_mindformer.py --config X.yaml --run_mode train|finetune|eval|predict"""
import os
import sys

# keep MindSpore's C++ log to warnings and errors unless the user asked otherwise
os.environ.setdefault("GLOG_v", "2")


def main(argv=None) -> int:
    """Parse the command line, load and check the config, and run the requested mode."""
    from mindformers.config import ConfigError, load_config
    from mindformers.tools.cli import parse_args
    from mindformers.tools.register import register_path

    try:
        args, overrides = parse_args(argv)
        for path in args.register_path:
            register_path(path)
        if not os.path.isfile(args.config):
            raise ConfigError(f"--config {args.config}: no such file")
        config = load_config(args.config, overrides)
    except (ConfigError, FileNotFoundError, KeyError, TypeError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(config.to_yaml(), end="")
        return 0
    if args.validate:
        print(f"{args.config}: OK")
        return 0
    run_mode = config.get("run_mode") or "train"
    if run_mode not in ("train", "finetune", "eval", "predict"):
        print(f"error: {config.where('run_mode')}: run_mode '{run_mode}' must be train, finetune, eval or "
              f"predict", file=sys.stderr)
        return 2

    from mindformers import Trainer
    from mindformers.trainer.causal_lm import TrainingStopped
    from mindformers.tools.logger import setup_logging

    rank_id = int(os.environ.get("RANK_ID", os.environ.get("MS_NODE_ID", "0")) or 0) \
        if config.get("use_parallel") else 0
    setup_logging(config.get("output_dir") or "./output", rank_id)
    trainer = Trainer(config)
    try:
        if run_mode == "train":
            trainer.train()
        elif run_mode == "finetune":
            trainer.finetune()
        elif run_mode == "eval":
            trainer.evaluate()
        else:
            trainer.predict(args.predict_data if args.predict_data else None,
                            **({"predict_batch_size": args.predict_batch_size} if args.predict_batch_size else {}))
    except (ValueError, FileNotFoundError, NotImplementedError, KeyError, TypeError, TrainingStopped) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
