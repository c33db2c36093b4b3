"""`python -m cifar10` is `python -m cifar10.fit`, signals outside training included."""

from cifar10.fit import run_as_command

run_as_command()
