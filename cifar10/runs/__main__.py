"""`python -m cifar10.runs [LOGDIR...]`: the table of runs (cifar10.runs.table)."""

import sys

from cifar10.runs.table import main

sys.exit(main())
