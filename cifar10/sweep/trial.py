"""`python -m cifar10.sweep.trial FIT-FLAGS...`: one fit of a sweep trial, in a process of its own.

It is `python -m cifar10.fit` with one more callback (cifar10.sweep.pruning): the sweep process that
starts it passes the study and trial in the environment (TRIAL_ENV, JSON), so the fit reports its
per-epoch validation accuracy to the study and stops when the pruner says so. A pruned run is an
ordinary run folder whose metrics.json says `status: pruned`. The process ends when the sweep process
that started it dies (SIGKILL included): Linux sends it SIGTERM then, so fit saves last.ckpt after the
step in flight, and the retried trial resumes from there.
"""

import ctypes
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna

from cifar10 import fit
from cifar10.runs.metrics import RunMetrics, write_metrics
from cifar10.fit_settings import settings_from
from cifar10.sweep.pruners import make_pruner
from cifar10.sweep.pruning import TrialPruning
from cifar10.sweep.storage import open_storage

TRIAL_ENV = "CIFAR10_SWEEP_TRIAL"
PR_SET_PDEATHSIG = 1  # prctl(2)


def end_with_parent(parent: int) -> None:
    """SIGTERM when the sweep process dies (prctl PR_SET_PDEATHSIG, Linux); elsewhere nothing."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before the request was made
        raise SystemExit(143)


def open_trial(spec: dict[str, Any]) -> optuna.Trial:
    """The running trial, from its id. The sweep process asked for it; this process only reports to it
    and asks the pruner (the sampler is not used here, so a RandomSampler: it keeps no state)."""
    study = optuna.load_study(study_name=spec["study"], storage=open_storage(spec["storage"]),
                              sampler=optuna.samplers.RandomSampler(), pruner=make_pruner(**spec["pruner"]))
    return optuna.Trial(study, spec["trial_id"])


def write_pruned(argv: Sequence[str], callback: TrialPruning, pruned: optuna.TrialPruned) -> None:
    """metrics.json of a pruned run: how far it got, and its settings like every run's."""
    settings, _ = settings_from(list(argv))
    write_metrics(Path(callback.run_dir), RunMetrics(
        settings.run.model, status="pruned", pruned_at_epoch=callback.epoch,
        epochs=None if callback.epoch is None else callback.epoch + 1, best_val_acc=callback.best_val_acc,
        recipe=settings.run.recipe, seed=settings.run.seed, reason=str(pruned), settings=settings.flat()))
    print(f"\nPruned at epoch {callback.epoch} ({pruned}); run folder: {callback.run_dir}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    spec = json.loads(os.environ[TRIAL_ENV])
    end_with_parent(spec["parent"])
    callback = TrialPruning(open_trial(spec), seed=spec["seed"], report=spec["report"])
    try:
        return fit.main(argv, callbacks=[callback])
    except optuna.TrialPruned as pruned:
        if callback.run_dir is None:
            raise
        write_pruned(argv, callback, pruned)
        return 0


if __name__ == "__main__":
    code = main()
    for _signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(_signum, signal.SIG_IGN)
    sys.exit(code)
