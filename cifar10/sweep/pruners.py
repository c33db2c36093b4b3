"""`--pruner median|hyperband|none` as Optuna pruners, built the same way in the sweep process and in
each trial's fit process (the pruner is not stored in the study).

- median: optuna.pruners.MedianPruner with Optuna's defaults: a trial stops at an epoch where its
  best accuracy so far is below the median of earlier trials' at that epoch, after 5 trials have finished.
- hyperband: optuna.pruners.HyperbandPruner over epochs, min_resource 1 and max_resource the most
  epochs a trial trains (Li et al., "Hyperband", JMLR 2018; Optuna's implementation).
- none: optuna.pruners.NopPruner; the epochs are still reported, for the history.
See https://optuna.readthedocs.io/en/stable/reference/pruners.html.
"""

import optuna

PRUNERS = ("median", "hyperband", "none")


def make_pruner(name: str, max_epochs: int) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, max_epochs))
    return optuna.pruners.NopPruner()
