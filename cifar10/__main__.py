"""`python -m cifar10` is `python -m cifar10.fit`, signals outside training included."""

import sys

from cifar10.console import exit_quietly_on_signals, ignore_signals

exit_quietly_on_signals()  # before the heavy imports: a signal while they load ends quietly too

from cifar10.fit import main  # noqa: E402

code = main()
ignore_signals()
sys.exit(code)
