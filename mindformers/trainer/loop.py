"""The training loop: steps start_step+1 .. total_steps of one train step cell over an endless batch stream,
with MindSpore callbacks around each step and epoch, and SIGTERM ending the run after the current step."""
import logging
import signal
import threading
from typing import List

logger = logging.getLogger("mindformers")


def data_skip_steps(config, start_step: int) -> int:
    """Steps of data to skip on resume: the resumed step (exact continuation), none with ignore_data_skip, or
    data_skip_steps (upstream's keys)."""
    if config.get("ignore_data_skip"):
        return 0
    skip = config.get("data_skip_steps")
    if skip is None:
        return start_step
    if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
        raise ValueError(f"data_skip_steps: {skip!r} must be an int >= 0")
    return skip


def _endless(iterator):
    """Batches from a MindSpore iterator across its epochs (each pass ends with StopIteration)."""
    while True:
        yield from iterator


def run_loop(cb, cbs, dataset, train_step, lr, start_step: int, total_steps: int) -> List[dict]:
    """Run steps start_step+1 .. total_steps, calling the callbacks; SIGTERM ends it after the current step."""
    from mindspore.train import RunContext

    ctx = RunContext(cb)
    samples_per_step = cb.tokens_per_step // int(cb.network.config.seq_length)

    def on_sigterm(signum, frame):
        logger.warning("SIGTERM: stopping after this step and saving a checkpoint")
        ctx.request_stop()

    previous = signal.signal(signal.SIGTERM, on_sigterm) \
        if threading.current_thread() is threading.main_thread() else None
    try:
        for c in cbs:
            c.on_train_begin(ctx)
        # The dataset is one endless stream cut into epochs (resumed ones start part-way), so batches
        # are drawn from it by step and the epoch follows from the step number.
        batches = _endless(dataset.create_tuple_iterator(num_epochs=-1, output_numpy=False))
        for step in range(start_step + 1, total_steps + 1):
            if ctx.get_stop_requested():
                break
            epoch = (step - 1) // cb.batch_num + 1
            if epoch != cb.cur_epoch_num or step == start_step + 1:
                cb.cur_epoch_num = epoch
                for c in cbs:
                    c.on_train_epoch_begin(ctx)
            cb.cur_step_num = step
            cb.lr = lr.value(step - 1)
            for c in cbs:
                c.on_train_step_begin(ctx)
            cb.net_outputs = train_step(*next(batches))
            cb.consumed_samples = step * samples_per_step
            for c in cbs:
                c.on_train_step_end(ctx)
            if step % cb.batch_num == 0 or step == total_steps:
                for c in cbs:
                    c.on_train_epoch_end(ctx)
        for c in cbs:
            c.on_train_end(ctx)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    monitor = next((c for c in cbs if hasattr(c, "history")), None)
    return monitor.history if monitor else []
