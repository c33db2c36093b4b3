"""The one exception type that command-line entry points turn into a clear message."""

import argparse
import sys
from collections.abc import Callable, Mapping
from typing import TypeVar
from functools import wraps

from cifar10.console import quiet_library_notices


class UserError(Exception):
    """Bad input from the user: the message says what was wrong and how to fix it."""


Entry = TypeVar("Entry")


def look_up(registry: Mapping[str, Entry], name: str, kind: str) -> Entry:
    """registry[name], or a UserError naming the `kind` of thing asked for and every name the registry knows."""
    if name not in registry:
        raise UserError(f"unknown {kind} {name!r}: choose one of {', '.join(registry)}.")
    return registry[name]


class CliParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are UserErrors that point at --help (`for <hint>`)."""

    def __init__(self, *args, hint: str = "usage", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.hint = hint

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message}. Run `{self.prog} --help` for {self.hint}.")


def exits_cleanly(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a CLI main so a UserError prints one paragraph on stderr and exits with code 2."""

    @wraps(main)
    def wrapper(*args, **kwargs) -> int:
        quiet_library_notices()  # every command: no lines that say nothing about its work
        try:
            return main(*args, **kwargs) or 0
        except UserError as err:
            try:
                print(f"error: {err}", file=sys.stderr)
            except OSError:  # nobody reads stderr any more (a closed pipe): the exit code still says it
                pass
            return 2

    return wrapper
