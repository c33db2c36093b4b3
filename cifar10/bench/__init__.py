"""Benchmarks: `python -m cifar10.bench {data,loop,speedrun}`; each prints one JSON object on its last line."""
