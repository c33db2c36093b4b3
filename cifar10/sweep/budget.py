"""`--trials N` as an exact total across any number of processes sharing one study.

Optuna's MaxTrialsCallback stops a process after the N-th trial finishes, so processes that ask at
the same moment overshoot. Here a process first asks for a trial (the storage numbers trials one at a
time, under a row lock of the study), then checks its place: a fresh trial runs only while fewer than N
earlier trials hold a place. A trial that finds none is released at once and the process stops asking.

A place is held by a *root* trial (one that is not a retry) and its chain of retries: the heartbeat's
RetryHeartbeatStaleTrialCallback queues a failed trial's copy with `failed_trial` naming the root, and
that copy keeps the root's place. A place is given back only when the chain's newest trial is one this
sweep released (a trial beyond N, or one whose fit crashed for a reason that is not its settings).
A released trial never holds a place again, so every process that checks sees the same order, and at
most N places are ever held.
"""

from collections.abc import Iterable
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

RELEASED = "released"  # user attribute {"trial": number, "why": ...} of a trial that gave its place back
FAILED_TRIAL = "failed_trial"  # system attribute RetryHeartbeatStaleTrialCallback puts on a retry


def root(trial: FrozenTrial) -> int:
    return trial.system_attrs.get(FAILED_TRIAL, trial.number)


def released(trial: FrozenTrial) -> bool:
    """Released by the process that ran it (retries copy user attributes, hence the number)."""
    mark = trial.user_attrs.get(RELEASED)
    return isinstance(mark, dict) and mark.get("trial") == trial.number


def holding_roots(trials: Iterable[FrozenTrial]) -> set[int]:
    """Roots whose newest trial has not given its place back."""
    newest: dict[int, FrozenTrial] = {}
    for trial in trials:
        r = root(trial)
        if r not in newest or trial.number > newest[r].number:
            newest[r] = trial
    return {r for r, trial in newest.items() if not (trial.state == TrialState.FAIL and released(trial))}


@dataclass(frozen=True)
class Places:
    open: int  # places no trial holds yet
    waiting: int  # queued trials (retries) that keep a place and wait for a process
    running: int

    @property
    def done(self) -> bool:
        return self.open <= 0 and not self.waiting and not self.running


def places(study: optuna.Study, total: int) -> Places:
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials if not released(t)]
    return Places(open=total - len(holding_roots(trials)), waiting=states.count(TrialState.WAITING),
                  running=states.count(TrialState.RUNNING))


def has_place(study: optuna.Study, trial_number: int, total: int) -> bool:
    """Whether the trial just asked for may run: a retry always (it keeps its root's place); a fresh
    trial when fewer than `total` earlier roots hold one."""
    trials = study.get_trials(deepcopy=False)
    this = next(t for t in trials if t.number == trial_number)
    if root(this) != trial_number:
        return True
    earlier = [t for t in trials if root(t) < trial_number]
    return len(holding_roots(earlier)) < total


def release(trial: optuna.Trial, why: str) -> None:
    trial.set_user_attr(RELEASED, {"trial": trial.number, "why": why})
