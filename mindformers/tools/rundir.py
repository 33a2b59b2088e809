"""The output directory of a run: checked before any work, held by one run at a time (a lock file with pid and
host), and disk faults on it reported as one line naming the path."""
import errno
import json
import logging
import os
import shutil
import socket
import time
from contextlib import contextmanager
from typing import Dict, Optional

logger = logging.getLogger("mindformers")

# below this much free space a run cannot even write its log and metrics
MIN_FREE_BYTES = 1 << 20
# errnos that mean the disk, not the program: reported as one line, not a traceback
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


class OutputDirError(OSError):
    """output_dir cannot be used or written (a file, not writable, full, held by another run); args[0] is the
    one-line message."""


def launch_rank(use_parallel: bool) -> int:
    """This worker's rank as msrun's environment gives it (0 for a one-process run)."""
    return int(os.environ.get("RANK_ID", os.environ.get("MS_NODE_ID", "0")) or 0) if use_parallel else 0


def checkpoint_bytes(network) -> int:
    """About what one checkpoint of `network` takes on disk: weights and two optimizer moments."""
    return 3 * sum(int(p.size) * int(p.itemsize) for p in network.get_parameters())


def disk_error(path: str, err: OSError, what: str) -> OutputDirError:
    """An OSError while writing `path` as the one-line error to print (`what` says what was being written)."""
    hint = {errno.ENOSPC: "free space on its disk or choose another output_dir",
            errno.EDQUOT: "raise the disk quota or choose another output_dir"}.get(getattr(err, "errno", None),
                                                                                 "give a writable output_dir")
    return OutputDirError(f"{path}: cannot write {what}: {getattr(err, 'strerror', None) or err} ({hint})")


def check_output_dir(output_dir: str, need_bytes: int = MIN_FREE_BYTES) -> None:
    """Raise OutputDirError if `output_dir` is a file, cannot be created or written, or its disk has less than
    `need_bytes` free."""
    path = os.path.abspath(output_dir)
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        what = "a file" if existing == path else f"{existing} on its path is a file"
        raise OutputDirError(f"{output_dir}: {what}, not a directory (output_dir must be a directory or a path "
                             f"that can become one)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputDirError(f"{output_dir}: not writable ({existing} does not let this user write; give a "
                             f"writable output_dir)")
    free = shutil.disk_usage(existing).free
    if free < need_bytes:
        raise OutputDirError(f"{output_dir}: {free / 2**20:.1f} MiB free on its disk, the run needs about "
                             f"{need_bytes / 2**20:.1f} MiB (free space or choose another output_dir)")


def lock_path(output_dir: str, rank_id: int = 0) -> str:
    """The lock file of `output_dir` for one rank (every worker of a distributed run holds its own)."""
    return os.path.join(output_dir, "run.lock" if rank_id == 0 else f"run.rank{rank_id}.lock")


def read_lock(path: str) -> Optional[Dict]:
    """The holder recorded in a lock file, or None if it is gone or unreadable (a half-written lock)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


# lock path -> how many holders in this process (a Trainer called inside run_mindformer's own hold)
_HELD: Dict[str, int] = {}


def is_msrun_scheduler() -> bool:
    """Whether this process is msrun's scheduler: it runs the same script as the workers but only coordinates
    them (inside mindspore.communication.init) and writes nothing to the run directory."""
    return os.environ.get("MS_ROLE") == "MS_SCHED"


def acquire(output_dir: str, rank_id: int = 0) -> str:
    """Take the lock of `output_dir` for this process; another live run holding it is an OutputDirError naming it,
    a lock left by a dead process (SIGKILL, power loss) is taken over with a warning. msrun's scheduler takes none
    (it shares rank 0's id; "" is returned and `release` ignores it)."""
    if is_msrun_scheduler():
        return ""
    path = lock_path(os.path.abspath(output_dir), rank_id)
    if _HELD.get(path):
        _HELD[path] += 1
        return path
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    except OSError as err:
        raise disk_error(output_dir, err, "the directory") from None
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = read_lock(path)
            if holder is None:  # being written this instant, or a crash mid-write
                time.sleep(0.05)
                holder = read_lock(path) or {}
            if holder.get("pid") == os.getpid() and holder.get("host") == me["host"]:
                break  # ours, left by an earlier run in this process
            if holder.get("host") == me["host"] and isinstance(holder.get("pid"), int) and pid_alive(holder["pid"]):
                raise OutputDirError(f"{output_dir}: in use by another run (pid {holder['pid']} on "
                                     f"{holder['host']}, since {holder.get('started', '?')}; lock {path}) "
                                     f"(wait for it to end or choose another output_dir)")
            if holder.get("host") not in (None, me["host"]):
                raise OutputDirError(f"{output_dir}: in use by a run on host {holder['host']} (pid "
                                     f"{holder.get('pid')}, since {holder.get('started', '?')}; lock {path}) "
                                     f"(choose another output_dir, or delete the lock if that run is gone)")
            logger.warning("%s: taking over the lock of pid %s (since %s), which is no longer running", output_dir,
                           holder.get("pid"), holder.get("started", "?"))
            if read_lock(path) == (holder or None):  # not replaced meanwhile by a run that took it over
                _remove(path)
            continue
        except OSError as err:
            raise disk_error(output_dir, err, "its lock file") from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(me, f)
        except OSError as err:
            _remove(path)
            raise disk_error(output_dir, err, "its lock file") from None
        break
    else:
        raise OutputDirError(f"{output_dir}: could not take its lock {path} (another run keeps taking it; "
                             f"choose another output_dir)")
    _HELD[path] = 1
    return path


def release(path: str) -> None:
    """Give back a lock taken by `acquire` (the file goes when this process's last holder releases it)."""
    if not path:
        return
    _HELD[path] = _HELD.get(path, 1) - 1
    if _HELD[path] <= 0:
        _HELD.pop(path, None)
        holder = read_lock(path)
        if holder is None or holder.get("pid") == os.getpid():
            _remove(path)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


@contextmanager
def hold_output_dir(output_dir: str, rank_id: int = 0):
    """Hold `output_dir`'s lock for the duration of the block."""
    path = acquire(output_dir, rank_id)
    try:
        yield path
    finally:
        release(path)
