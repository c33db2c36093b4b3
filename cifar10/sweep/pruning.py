"""Pruning a trial from its per-epoch validation accuracy, inside the trial's fit process.

optuna_integration's PyTorchLightningPruningCallback works with `lightning` 2.6 as it is (it imports
`lightning.pytorch` and reads `trainer.callback_metrics` after each validation): it reports `val/acc`
at step = epoch through trial.report and raises optuna.TrialPruned when the study's pruner says
so (https://optuna-integration.readthedocs.io/en/stable/reference/generated/optuna_integration.PyTorchLightningPruningCallback.html).
This subclass only adds what the sweep needs around it: the run folder, stored on the trial so a
retried trial resumes that folder, and the best accuracy and epoch so far, for the pruned run's
metrics.json. A trial with several seeds reports from its first seed only: the others run only
for trials that survive it, and their epochs would repeat the first one's steps.
"""

from typing import Any

import lightning as L
import optuna
from optuna_integration import PyTorchLightningPruningCallback

MONITOR = "val/acc"


def run_key(seed: int) -> str:
    """The trial's user attribute holding the run folder of one seed."""
    return f"run_seed{seed}"


class TrialPruning(PyTorchLightningPruningCallback):
    def __init__(self, trial: optuna.Trial, seed: int, report: bool) -> None:
        super().__init__(trial, monitor=MONITOR)
        self.seed = seed
        self.report = report
        self.run_dir: str | None = None
        self.best_val_acc: float | None = None
        self.epoch: int | None = None  # of the last validation seen

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        self.run_dir = trainer.log_dir
        if trainer.is_global_zero:
            self._trial.set_user_attr(run_key(self.seed), self.run_dir)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        score: Any = trainer.callback_metrics.get(MONITOR)
        if score is not None:
            self.epoch = pl_module.current_epoch
            self.best_val_acc = max(float(score), self.best_val_acc or 0.0)
        if self.report:
            super().on_validation_end(trainer, pl_module)
