"""Progress of a long evaluation: a tqdm bar when stderr is a terminal, else a log line every tenth of the way."""
import logging
import sys
import time

logger = logging.getLogger("mindformers")


class Progress:
    """Counts `total` units of work done under `desc`; `update(n)` as they finish, `close()` at the end."""

    def __init__(self, total: int, desc: str, unit: str, stream=None):
        self.total, self.desc, self.unit = total, desc, unit
        self.done, self.start, self.next_log = 0, time.perf_counter(), 0.1
        stream = stream or sys.stderr
        self.bar = None
        if hasattr(stream, "isatty") and stream.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, unit=unit, file=stream, dynamic_ncols=True)

    def update(self, n: int):
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        if self.done >= self.next_log * self.total:
            elapsed = time.perf_counter() - self.start
            rate = self.done / elapsed if elapsed > 0 else 0.0
            eta = (self.total - self.done) / rate if rate > 0 else 0.0
            logger.info("%s: %d/%d %ss (%d%%), %.2f %ss/s, %.0f s elapsed, about %.0f s left", self.desc, self.done,
                        self.total, self.unit, 100 * self.done // max(self.total, 1), rate, self.unit, elapsed, eta)
            while self.next_log * self.total <= self.done and self.next_log <= 1.0:
                self.next_log += 0.1

    def close(self):
        if self.bar is not None:
            self.bar.close()
