"""`python -m cifar10.sweep`: search fit settings with Optuna (cifar10.sweep.cli)."""

import sys

from cifar10.sweep.cli import main

sys.exit(main())
