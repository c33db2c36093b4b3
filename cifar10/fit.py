"""`python -m cifar10.fit`: train one model with a recipe, log it (TensorBoard by default; `cifar10.loggers`), test
the best checkpoint and record the run in its metrics.json (`cifar10.runs.metrics`).

Its flags and their layers are `cifar10.fit_settings`, its sections `cifar10.settings`; `cifar10.fit_flow` runs
the fit, with the messages and exit codes of its stops; `cifar10.assembly` builds the Trainer, DataModule, model
and callbacks it trains (what the benchmarks time too). This module imports neither torch nor Lightning:
`python -m cifar10.fit` sets its signal handlers first, and `main` loads them after, so a signal while they load
ends the command quietly.
"""

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cifar10.console import exit_quietly_on_signals, ignore_signals, unbreakable_output
from cifar10.errors import exits_cleanly

if TYPE_CHECKING:
    from lightning import Callback


@exits_cleanly
def main(argv: Sequence[str] | None = None, *, callbacks: Sequence["Callback"] = ()) -> int:
    """The fit CLI; `callbacks` are extra Lightning callbacks (tests use them)."""
    with unbreakable_output():  # a closed pipe (tee stopped by the same Ctrl-C) must not end a run unsaved
        from cifar10.fit_flow import fit_from_argv  # torch and Lightning: loaded here, after the handlers

        return fit_from_argv(sys.argv[1:] if argv is None else argv, callbacks)


def run_as_command() -> None:
    """`python -m cifar10.fit` and `python -m cifar10`: signals end the command quietly from its first moment,
    and once it is done a late one cannot change the exit code main returned."""
    exit_quietly_on_signals()
    code = main()
    ignore_signals()
    sys.exit(code)


if __name__ == "__main__":
    run_as_command()
