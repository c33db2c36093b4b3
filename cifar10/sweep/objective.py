"""A trial's objective: its fits, one per seed, each a `python -m cifar10.sweep.trial` process.

Each fit is an ordinary run folder under the study folder (`STUDY_DIR/MODEL/version_N`), with its output
appended to `STUDY_DIR/logs/trial-N-seedS.log`. The value is the best validation accuracy of the run
(never its test accuracy), the mean over the seeds with several. A retried trial (the copy Optuna's
heartbeat queued after its process died) finds its run folders in the user attributes it inherited: a
finished or pruned run is taken as it is, an unfinished one is resumed from its last.ckpt.
"""

import json
import os
import shlex
import socket
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from cifar10.bench.results import find_run_folder, read_metrics, run_command
from cifar10.sweep import budget
from cifar10.sweep.pruning import run_key
from cifar10.sweep.space import Param, flag_tokens
from cifar10.sweep.trial import TRIAL_ENV

TAIL_LINES = 15


class TrialFailed(Exception):
    """The fit ran and failed because of its settings (a loss that became nan): the trial is FAIL and
    the sweep goes on."""


class FitCrashed(Exception):
    """The fit process ended without a run's result, for a reason the settings do not explain (a bad
    --data-dir, a bug, a kill): the sweep stops, and the trial's place is given back."""


@dataclass(frozen=True)
class TrialPlan:
    """What every trial of this sweep process shares."""

    model: str
    recipe: str
    seeds: list[int]
    params: list[Param]
    fit_flags: list[str]  # passed through to every fit
    study_dir: Path
    study: str
    storage: str
    pruner: dict[str, Any]  # make_pruner's arguments
    total: int  # --trials


def earlier_run(trial: optuna.Trial, seed: int) -> tuple[Path | None, dict[str, Any] | None]:
    """The run folder this trial (or the trial it retries) already has for seed, and its metrics if done."""
    folder = trial.user_attrs.get(run_key(seed))
    if not folder or not Path(folder).is_dir():
        return None, None
    metrics, _ = read_metrics(Path(folder))
    return Path(folder), metrics


def fit_command(plan: TrialPlan, values: dict[str, Any], seed: int, resume: Path | None) -> list[str]:
    return [sys.executable, "-m", "cifar10.sweep.trial", "--model", plan.model, "--recipe", plan.recipe,
            "--seed", str(seed), "--logdir", str(plan.study_dir), *flag_tokens(values), *plan.fit_flags,
            *(["--ckpt-path", str(resume)] if resume else [])]


def run_seed(plan: TrialPlan, trial: optuna.Trial, values: dict[str, Any], seed: int, report: bool) -> dict:
    """The metrics.json of this trial's run with seed: an earlier run's if finished, else from a fit."""
    folder, metrics = earlier_run(trial, seed)
    if metrics and metrics.get("status") in ("finished", "pruned", "failed"):
        return metrics
    last = folder / "checkpoints" / "last.ckpt" if folder else None
    resume = last if last and last.is_file() else None
    command = fit_command(plan, values, seed, resume)
    log = plan.study_dir / "logs" / f"trial-{trial.number}-seed{seed}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
        out.write(f"$ {shlex.join(command)}\n")
    start = log.stat().st_size
    # the fit process reopens this trial by its storage id (Optuna's integrations read it the same way)
    spec = {"storage": plan.storage, "study": plan.study, "trial_id": trial._trial_id, "seed": seed,
            "report": report, "pruner": plan.pruner, "parent": os.getpid()}
    # the fit runs in a session of its own: a Ctrl-C (or SIGTERM) of the sweep reaches it as one SIGINT, so it
    # saves last.ckpt, and the KeyboardInterrupt is raised again once it has exited (a second Ctrl-C kills it)
    code = run_command(command, log, os.environ | {TRIAL_ENV: json.dumps(spec)})
    with open(log, "rb") as file:
        file.seek(start)
        text = file.read().decode(errors="replace")
    folder = find_run_folder(text) or folder
    metrics, why = read_metrics(folder)
    if metrics is not None and (code == 0 or metrics.get("status") == "failed"):
        return metrics
    tail = "\n".join("    " + line for line in [x for x in text.splitlines() if x.strip()][-TAIL_LINES:])
    raise FitCrashed(f"trial {trial.number}'s fit (seed {seed}) exited with code {code} "
                     f"({why or 'no result'}); its log is {log}, ending:\n{tail}")


def objective(plan: TrialPlan, study: optuna.Study):
    """The function Study.optimize calls: a trial's value, or TrialPruned, TrialFailed, FitCrashed."""
    def evaluate(trial: optuna.Trial) -> float:
        if not budget.has_place(study, trial.number, plan.total):
            budget.release(trial, "beyond --trials")
            raise Surplus()
        trial.set_user_attr("process", f"{socket.gethostname()}:{os.getpid()}")  # which worker ran it
        values = {p.name: p.suggest(trial) for p in plan.params}
        accs = []
        try:
            for index, seed in enumerate(plan.seeds):
                accs.append(seed_value(plan, trial, values, seed, report=index == 0))
        except FitCrashed as crash:
            budget.release(trial, str(crash).splitlines()[0])
            raise
        except KeyboardInterrupt:  # queue it again, so the next start resumes its run folders
            frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
            optuna.storages.RetryHeartbeatStaleTrialCallback(inherit_intermediate_values=True)(study, frozen)
            raise
        trial.set_user_attr("val_accs", accs)
        return statistics.fmean(accs)
    return evaluate


def seed_value(plan: TrialPlan, trial: optuna.Trial, values: dict[str, Any], seed: int, report: bool) -> float:
    metrics = run_seed(plan, trial, values, seed, report)
    status = metrics.get("status")
    if status == "pruned":
        trial.set_user_attr("pruned_seed", seed)
        raise optuna.TrialPruned(f"pruned at epoch {metrics.get('pruned_at_epoch')} (seed {seed})")
    if status != "finished" or metrics.get("best_val_acc") is None:
        error = metrics.get("error") or f"status {status}, best_val_acc {metrics.get('best_val_acc')}"
        trial.set_user_attr("error", error)
        raise TrialFailed(error)
    return float(metrics["best_val_acc"])


class Surplus(Exception):
    """The trial asked for has no place within --trials: released, and this process stops asking."""
