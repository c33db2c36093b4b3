"""Writes that never damage the previous good file (a temp file in the same folder, flushed, renamed), and
bounded reads of files someone else made.

A rename within one folder is atomic on POSIX filesystems, NFS and Lustre included, so a crash, a
kill or a full disk leaves either the old file or the new one, never a mix; the temp file is removed
on failure. (Lightning's own checkpoint writer stages in $TMPDIR and moves across filesystems,
which copies over the old file in place.)
"""

import errno
import io
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from cifar10.errors import UserError

TEMP_SUFFIX = ".partial"  # temp files are "<name>.<random>.partial" beside the target


class DiskFull(UserError):
    """A write ran out of space; the message says what was kept."""


@contextmanager
def replaced_atomically(path: str | Path) -> Iterator[Path]:
    """A temp file beside `path` to write (by any writer) inside the block; renamed to `path` after it.

    On any failure the temp file is removed and `path` keeps its old content; a full disk is DiskFull.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=path.name + ".", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        os.chmod(temp, 0o666 & ~current_umask())  # mkstemp makes it 0600; give it an ordinary file's mode
        yield Path(temp)
        os.replace(temp, path)
    except BaseException as err:  # KeyboardInterrupt too: never leave the temp file behind
        Path(temp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            kept = f"the previous {path.name} is unchanged" if path.exists() else f"no {path.name} was written"
            raise DiskFull(f"no space left on the device to write {path}; {kept}. Free some space in "
                           f"{path.parent} (or pass another --logdir) and run again.") from None
        raise


def atomic_write(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` through a temp file beside it, flushed to disk; the old `path` survives any failure."""
    with replaced_atomically(path) as temp, open(temp, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    return Path(path)


def current_umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, text.encode())


def output_file(path: str | Path, flag: str, example_name: str) -> Path:
    """`path` as a file to write: its folder is created; an existing folder there is a UserError."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder; pass a file name, e.g. {flag} {path / example_name}.")
    writable_folder(path.parent, flag)
    return path


def writable_folder(folder: str | Path, flag: str) -> Path:
    """Create `folder` if needed and check that files can be written there; UserError otherwise, up front."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as err:
        raise UserError(f"cannot write to {folder} ({err.strerror}): make it writable, or pass another {flag}. "
                        "Nothing was done yet.") from None
    return folder


def leftover_temp_files(folder: str | Path) -> list[Path]:
    """Temp files an earlier killed write left in `folder`."""
    return sorted(Path(folder).glob(f"*{TEMP_SUFFIX}"))


class NotReadable(UserError):
    """A file that is not a regular file, is too large, or cannot be opened; the message says which."""


def read_bounded(path: str | Path, limit: int) -> bytes:
    """The bytes of the regular file `path`, at most `limit` of them; NotReadable otherwise.

    Opened without blocking and checked with fstat before reading, so a FIFO, a device (a symlink to
    /dev/zero) or a huge file fails at once instead of hanging or filling memory.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as err:
        raise NotReadable(f"{path} cannot be opened ({err.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotReadable(f"{path} is not a regular file (a FIFO, device, socket or folder)")
    with os.fdopen(fd, "rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise NotReadable(f"{path} is larger than {limit:,} bytes")
    return data


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, saving through `atomic_write` (same folder, fsync, rename)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write(path, buffer.getbuffer())
        for stale in leftover_temp_files(Path(path).parent):  # from a run killed mid-write
            if stale.name.startswith(Path(path).name + "."):
                stale.unlink(missing_ok=True)
