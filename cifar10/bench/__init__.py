"""Benchmarks: `python -m cifar10.bench {data,...}`; each subcommand prints one JSON object last."""
