"""`python -m cifar10.bench SUBCOMMAND ...`: one argparse subcommand per benchmark module.

A benchmark module exposes `add_arguments(parser)` and `run(args) -> int | None`, and its docstring's
first line is the subcommand's help. To add one, add its name and module to SUBCOMMANDS.
"""

import argparse
import importlib
import sys

from cifar10.errors import exits_cleanly

SUBCOMMANDS = {
    "airbench-cpu": "cifar10.bench.airbench_cpu",
    "data": "cifar10.bench.data",
    "layout": "cifar10.bench.layout",
    "loop": "cifar10.bench.loop",
    "results": "cifar10.bench.results",
    "speedrun": "cifar10.bench.speedrun",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cifar10.bench", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(SUBCOMMANDS) + "}")
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        summary = (module.__doc__ or name).strip().splitlines()[0]
        sub = commands.add_parser(name, help=summary, description=module.__doc__)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


@exits_cleanly
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args) or 0


if __name__ == "__main__":
    sys.exit(main())
