"""How the commands write and end outside the training loop: output that a closed pipe or a hung-up
terminal cannot turn into a crash, and signals that end a command quietly.

Light on purpose (no torch, no Lightning): `python -m cifar10` and `python -m cifar10.fit` install the
handlers before their heavy imports, so a signal while those load ends the command quietly too.
"""

import logging
import os
import signal
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

# SIGHUP: the terminal closed or the ssh session dropped; handled like SIGTERM
EXIT_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def say(*parts: Any, file: TextIO | None = None) -> None:
    """print to stderr (or `file`) that never raises: with nobody reading, the words are dropped."""
    try:
        print(*parts, file=file or sys.stderr, flush=True)
    except (OSError, ValueError):  # a closed pipe (tee stopped by the same Ctrl-C), a hung-up tty, a closed file
        pass


class Unbreakable:
    """A text stream whose writes never raise for a reader that went away.

    On the first failed write its file descriptor is pointed at /dev/null, as the Python docs advise for
    a closed pipe (signal module, "Note on SIGPIPE"), so every later write to it, by any stream object,
    tqdm's and logging's included, and the flush at exit, succeeds instead of raising in the middle of
    a training step.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError:
            self._discard()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError:
            self._discard()

    def _discard(self) -> None:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):  # a stream without a descriptor (captured by a test)
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextmanager
def unbreakable_output() -> Iterator[None]:
    """sys.stdout and sys.stderr as Unbreakable streams inside the block, as they were after it."""
    before = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = Unbreakable(sys.stdout), Unbreakable(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = before


class DropAdverts(logging.Filter):
    """Drop Lightning's "💡 Tip: ... try installing litlogger / litmodels" lines: advice about other products."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


def quiet_library_notices() -> None:
    """Silence what the libraries print that says nothing about this run: Lightning's product tips, and the
    deprecation warning its own _pytree helper triggers in torch (ours to silence: no code of ours uses it)."""
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, DropAdverts) for f in rank_zero.filters):
        rank_zero.addFilter(DropAdverts())
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


def exit_on_signal(signum: int, frame: object) -> None:
    """Outside training (start-up, download, set-up), SIGINT, SIGTERM and SIGHUP end the command quietly."""
    say(f"\n{signal.Signals(signum).name}: stopped outside training, so there was nothing to save.")
    raise SystemExit(128 + signum)


def exit_quietly_on_signals() -> None:
    for signum in EXIT_SIGNALS:
        signal.signal(signum, exit_on_signal)


def ignore_signals() -> None:
    """The work is done: a late signal must not kill the interpreter mid-shutdown with another exit code."""
    for signum in EXIT_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
