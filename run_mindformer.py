"""Run a MindFormers config: python run_mindformer.py --config X.yaml --run_mode train|finetune|eval|predict"""
import os
import sys

# keep MindSpore's C++ log to warnings and errors unless the user asked otherwise
os.environ.setdefault("GLOG_v", "2")


def main(argv=None) -> int:
    """Parse the command line, load and check the config, and run the requested mode."""
    from mindformers.config import ConfigError, load_config, validate_config
    from mindformers.tools.cli import parse_args
    from mindformers.tools.logger import log_traceback_to_file, setup_logging
    from mindformers.tools.register import register_path

    try:
        args, overrides = parse_args(argv)
        for path in args.register_path:
            register_path(path)
        if not os.path.isfile(args.config):
            raise ConfigError(f"--config {args.config}: no such file")
        config = load_config(args.config, overrides, validate=False)
        rank_id = int(os.environ.get("RANK_ID", os.environ.get("MS_NODE_ID", "0")) or 0) \
            if config.get("use_parallel") else 0
        # before the checks, whose "has no effect here" notices belong in the run's log
        output_dir = None if args.print_config or args.validate else config.get("output_dir") or "./output"
        try:
            setup_logging(output_dir, rank_id)
        except OSError as err:
            raise ConfigError(f"{config.where('output_dir')}: output_dir '{output_dir}': cannot write its log "
                              f"({err.strerror}); give a writable directory") from None
        if args.print_config:
            validate_config(config)
        else:
            from mindformers.trainer.preflight import preflight
            preflight(config)  # the schema and the model section: every problem at once
    except (ConfigError, FileNotFoundError, KeyError, TypeError, ValueError) as e:
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

    trainer = Trainer(config)
    try:
        if run_mode == "train":
            trainer.train()
        elif run_mode == "finetune":
            trainer.finetune()
        elif run_mode == "eval":
            trainer.evaluate()
        else:
            trainer.predict(input_data=args.predict_data if args.predict_data else None)
    except (ConfigError, ValueError, FileNotFoundError, NotImplementedError, ImportError, TrainingStopped) as e:
        # bad input, a missing file or package, or a run stopped on purpose: one line; the traceback goes to the
        # log file in case a ValueError came from a bug
        log_traceback_to_file(f"run stopped: {type(e).__name__}")
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    # anything else is a bug: Python prints its traceback (stderr), and the log file keeps it too
    except Exception as e:
        log_traceback_to_file(f"unexpected {type(e).__name__}")
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
