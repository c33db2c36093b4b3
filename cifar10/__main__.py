"""`python -m cifar10` is `python -m cifar10.fit`."""

import sys

from cifar10.fit import main

sys.exit(main())
