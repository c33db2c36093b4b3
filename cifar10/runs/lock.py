"""One fit at a time in a run folder: an advisory `flock` on `<run folder>/.lock`, which holds the pid.

The kernel releases a flock when its process ends, however it ends (SIGKILL, out-of-memory kill), so a
lock left by a killed fit is stale by construction and the next fit takes it over; a live one is
refused. Linux emulates flock with fcntl byte-range locks on NFS, so it holds there too (flock(2)).
The file is removed, still locked, when the fit ends; a fit that opened it just before then finds
another inode at the path once it holds the lock, and starts over (the usual pattern for lock files
that are deleted).
"""

import errno
import fcntl
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cifar10.errors import UserError

LOCK_NAME = ".lock"


class RunLocked(UserError):
    """Another live process is training in this run folder."""


def _holder(path: Path) -> str:
    """The pid written in the lock file, as text ('unknown' when unreadable or not a number)."""
    try:
        with open(path, "rb") as file:
            text = file.read(32).decode(errors="replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


def _open(path: Path) -> int:
    """The lock file's descriptor; a symlink, FIFO or other non-file there is refused, not followed."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as err:
        why = "a symlink is there" if err.errno == errno.ELOOP else err.strerror
        raise UserError(f"cannot lock the run folder {path.parent} ({why}): make it writable, or pass another "
                        "--logdir. Nothing was run.") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UserError(f"{path} is not a regular file, so the run folder cannot be locked: remove it. Nothing was run.")
    return fd


def acquire(run_dir: Path) -> tuple[int, str | None]:
    """Lock `run_dir`: (the descriptor holding the lock, the pid of a stale lock taken over, if any)."""
    path = Path(run_dir) / LOCK_NAME
    while True:
        fd = _open(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = _holder(path)
            raise RunLocked(f"the run folder {run_dir} is being trained by another fit (pid {pid}, lock file {path}); "
                            "two fits in one folder would overwrite each other's checkpoints. Wait for it to end, or "
                            f"stop it (kill -TERM {pid}, which saves its last.ckpt) and resume then.") from None
        try:
            same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the holder removed the file between our open and our lock: lock the one there now
            os.close(fd)
            continue
        stale = _holder(path) if os.fstat(fd).st_size else None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd, stale


def release(run_dir: Path, fd: int) -> None:
    """Remove the lock file while still holding it, then let go."""
    try:
        (Path(run_dir) / LOCK_NAME).unlink(missing_ok=True)
    finally:
        os.close(fd)


def is_locked(run_dir: Path) -> bool:
    """Whether a live process holds `run_dir`'s lock (a stale or absent lock file: False)."""
    path = Path(run_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


@contextmanager
def locked(run_dir: Path, say=print) -> Iterator[None]:
    """Hold `run_dir`'s lock inside the block; `say` tells about a stale lock that was taken over."""
    fd, stale = acquire(run_dir)
    if stale is not None:
        say(f"note: took over the lock of process {stale} in {run_dir}, which no longer runs.")
    try:
        yield
    finally:
        release(run_dir, fd)
