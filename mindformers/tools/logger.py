"""The `mindformers` logger: one line per record on stderr, and a file under output_dir/log."""
import logging
import os
import sys

logger = logging.getLogger("mindformers")
LOGGED_ONCE = set()  # keys log_once has logged in this process


def log_once(key, message: str, *args) -> None:
    """logger.info(message, *args) the first time `key` comes in this process: a setting's "has no effect" note is
    said once per run, not at every model or dataset build."""
    if key not in LOGGED_ONCE:
        LOGGED_ONCE.add(key)
        logger.info(message, *args)


def setup_logging(output_dir: str = None, rank_id: int = 0, level: int = logging.INFO):
    """Log to stderr (rank 0 only in distributed runs) and to output_dir/log/rank_<id>.log."""
    logger.setLevel(level)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    if rank_id == 0:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(fmt)
        logger.addHandler(stream)
    if output_dir:
        log_dir = os.path.join(output_dir, "log")
        os.makedirs(log_dir, exist_ok=True)
        file = logging.FileHandler(os.path.join(log_dir, f"rank_{rank_id}.log"), encoding="utf-8")
        file.setFormatter(fmt)
        logger.addHandler(file)
    return logger


def log_traceback_to_file(message: str):
    """Write `message` with the exception being handled to the log files only (stderr keeps its one line)."""
    record = logger.makeRecord(logger.name, logging.ERROR, __file__, 0, message, None, sys.exc_info())
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
