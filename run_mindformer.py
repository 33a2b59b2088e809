"""Run a MindFormers config: python run_mindformer.py --config X.yaml --run_mode train|finetune|eval|predict"""
import errno
import os
import sys

# keep MindSpore's C++ log to warnings and errors unless the user asked otherwise
os.environ.setdefault("GLOG_v", "2")


def main(argv=None) -> int:
    """Parse the command line, load and check the config, and run the requested mode."""
    from mindformers.tools.rundir import release

    held = []  # the output_dir lock this run takes, given back however it ends
    try:
        return _main(argv, held)
    finally:
        for path in held:
            release(path)


def _one_line(e: BaseException) -> str:
    """The message of an error that ends the run on bad input or a faulty disk, as one line."""
    if isinstance(e, UnicodeDecodeError):  # its args[0] is only the codec's name
        return f"a file is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}: {e.reason}) " \
               f"(save it as UTF-8)"
    if isinstance(e, OSError) and not e.args[1:]:
        return str(e.args[0]) if e.args else str(e)
    if isinstance(e, OSError):
        hint = {errno.ENOSPC: "free space on its disk", errno.EDQUOT: "raise the disk quota",
                errno.EROFS: "give a path on a writable disk", errno.EACCES: "give a path this user can use",
                errno.EPERM: "give a path this user can use"}.get(e.errno, "check the path")
        return f"{e.filename or 'a file'}: {e.strerror} ({hint})"
    return str(e.args[0] if e.args else e)


def _main(argv, held) -> int:
    from mindformers.config import ConfigError, load_config, validate_config
    from mindformers.tools.cli import parse_args
    from mindformers.tools.logger import log_traceback_to_file, setup_logging
    from mindformers.tools.register import register_path
    from mindformers.tools.rundir import (DISK_ERRNOS, OutputDirError, acquire, check_output_dir, is_msrun_scheduler,
                                          launch_rank)
    from mindformers.tools.textfile import check_utf8

    try:
        args, overrides = parse_args(argv)
        for path in args.register_path:
            register_path(path)
        if not os.path.isfile(args.config):
            raise ConfigError(f"--config {args.config}: no such file")
        config = load_config(args.config, overrides, validate=False)
        rank_id = launch_rank(bool(config.get("use_parallel")))
        # before the checks, whose "has no effect here" notices belong in the run's log; msrun's scheduler
        # (the same script, coordinating the workers) neither holds the run directory nor writes its log
        output_dir = None if args.print_config or args.validate or is_msrun_scheduler() \
            else config.get("output_dir") or "./output"
        setup_logging(None, rank_id)  # stderr only, until output_dir is known to be usable and ours
        if output_dir:
            try:
                check_output_dir(output_dir)
                held.append(acquire(output_dir, rank_id))  # a second run on this output_dir stops here
            except OutputDirError as err:
                raise ConfigError(f"{config.where('output_dir')}: output_dir {err.args[0]}") from None
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
        prompts = args.predict_data or []
        if len(prompts) == 1 and os.path.isfile(prompts[0]):  # a prompt file: its bad bytes named with their line
            check_utf8(prompts[0])
    except (ConfigError, FileNotFoundError, KeyError, TypeError, ValueError) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
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

    try:
        trainer = Trainer(config)
        if run_mode == "train":
            trainer.train()
        elif run_mode == "finetune":
            trainer.finetune()
        elif run_mode == "eval":
            trainer.evaluate()
        else:
            trainer.predict(input_data=args.predict_data if args.predict_data else None)
    except (ConfigError, ValueError, FileNotFoundError, NotImplementedError, ImportError, TrainingStopped,
            OutputDirError) as e:
        # bad input, a missing file or package, a full disk, or a run stopped on purpose: one line; the traceback
        # goes to the log file in case a ValueError came from a bug
        log_traceback_to_file(f"run stopped: {type(e).__name__}")
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:
        log_traceback_to_file(f"run stopped: {type(e).__name__}")
        if e.errno not in DISK_ERRNOS:
            raise  # not the disk: a bug, with its traceback
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    # anything else is a bug: Python prints its traceback (stderr), and the log file keeps it too
    except Exception as e:
        log_traceback_to_file(f"unexpected {type(e).__name__}")
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
