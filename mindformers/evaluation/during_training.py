"""Evaluation during training: loss and perplexity on eval_dataset at step and epoch intervals and at the end."""
import json
import logging
from typing import Optional

from mindspore.train import Callback

from .scoring import score_dataset

logger = logging.getLogger("mindformers")


class EvalDuringTraining(Callback):
    """Scores eval_dataset every `interval` steps and/or every `epoch_interval` epochs (0 = not by that measure)
    and at the end of training; logs and appends to a jsonl file."""

    def __init__(self, network, dataset, interval: int, path: Optional[str], epoch_interval: int = 0):
        super().__init__()
        self.network, self.dataset, self.interval, self.path = network, dataset, max(0, interval), path
        self.epoch_interval = max(0, epoch_interval)
        self.results = []
        self._last = None

    def _run(self, step: int, cb):
        result = {"step": step, **score_dataset(self.network, self.dataset)}
        self.results.append(result)
        cb.eval_results = self.results  # for TensorBoard and the loss curve
        self._last = step
        logger.info("eval at step %d: loss %.4f | perplexity %.3f", step, result["loss"], result["perplexity"])
        if self.path:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(result) + "\n")

    def on_train_step_end(self, run_context):
        cb = run_context.original_args()
        if self.interval and cb.cur_step_num % self.interval == 0:
            self._run(cb.cur_step_num, cb)

    def on_train_epoch_end(self, run_context):
        cb = run_context.original_args()
        if self.epoch_interval and cb.cur_epoch_num % self.epoch_interval == 0 and cb.cur_step_num != self._last:
            self._run(cb.cur_step_num, cb)

    def on_train_end(self, run_context):
        cb = run_context.original_args()
        if cb.cur_step_num and cb.cur_step_num != self._last:
            self._run(cb.cur_step_num, cb)
