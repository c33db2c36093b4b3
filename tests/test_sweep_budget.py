"""--trials as an exact total: the places of cifar10.sweep.budget on a real SQLite study, trials asked
the way concurrent processes ask them (no fits: the order of asking is what is tested)."""

import optuna
import pytest
from optuna.trial import TrialState

from cifar10.sweep import budget
from cifar10.sweep.storage import open_storage

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


@pytest.fixture
def study(tmp_path):
    return optuna.create_study(study_name="s", storage=open_storage(f"sqlite:///{tmp_path / 'db.sqlite3'}"),
                               direction="maximize")


def test_two_processes_asking_for_the_last_place_get_one_between_them(study):
    first = study.ask()
    study.tell(first, 0.5)
    a, b = study.ask(), study.ask()  # both asked before either checked
    assert budget.has_place(study, a.number, total=2) and not budget.has_place(study, b.number, total=2)
    budget.release(b, "beyond --trials")
    study.tell(b, state=TrialState.FAIL)
    assert budget.places(study, 2) == budget.Places(open=0, waiting=0, running=1)
    study.tell(a, 0.7)
    assert budget.places(study, 2).done


def test_a_retry_keeps_its_place_and_a_released_trial_gives_it_back(study):
    killed = study.ask()
    study.tell(killed, state=TrialState.FAIL)  # as fail_stale_trials leaves a dead process's trial
    optuna.storages.RetryHeartbeatStaleTrialCallback()(study, study.trials[killed.number])
    assert budget.places(study, 2) == budget.Places(open=1, waiting=1, running=0)
    fresh = study.ask()  # the queued retry comes first
    assert fresh.number == 1 and budget.root(study.trials[1]) == killed.number
    assert budget.has_place(study, fresh.number, total=1)  # it keeps the killed trial's place
    crashed = study.ask()
    assert budget.has_place(study, crashed.number, total=2)
    budget.release(crashed, "its fit crashed")
    study.tell(crashed, state=TrialState.FAIL)
    assert budget.places(study, 2).open == 1  # the crashed trial's place is free again
    assert not budget.has_place(study, study.ask().number, total=1)
