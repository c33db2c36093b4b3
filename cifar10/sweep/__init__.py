"""Hyper-parameter sweeps with Optuna: `python -m cifar10.sweep` (cifar10/sweep/cli.py).

    space.py      the search-space YAML: fit settings and their ranges, checked before any trial
    storage.py    the study's RDB storage: an SQLite file by default, any Optuna RDB URL to share one
    budget.py     --trials as an exact total over many processes
    objective.py  a trial: one fit process per seed, each an ordinary run folder; retries resume them
    trial.py      the fit process of a trial (`python -m cifar10.sweep.trial`), with pruning.py's callback
    pruners.py    --pruner as Optuna pruners
    report.py     the trials table, best.yaml, Optuna's plots and the final JSON line
"""
