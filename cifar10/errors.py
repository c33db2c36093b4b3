"""The one exception type that command-line entry points turn into a clear message."""

import sys
from collections.abc import Callable
from functools import wraps


class UserError(Exception):
    """Bad input from the user: the message says what was wrong and how to fix it."""


def exits_cleanly(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a CLI main so a UserError prints one paragraph on stderr and exits with code 2."""

    @wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs) or 0
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2

    return wrapper
