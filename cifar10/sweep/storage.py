"""Where a study lives: an SQLite file in the logdir by default, or any Optuna RDB URL (PostgreSQL, MySQL).

Every process of a sweep opens the same URL; Optuna's RDB storage keeps trials, their settings and
their per-epoch values there, and takes a trial number under a row lock of the study, so workers on
many machines never share a trial. The sweep processes record a heartbeat for their running trial;
a trial whose heartbeat stops (SIGKILL, preemption, a lost machine) is failed by the next process
that asks for a trial, and RetryHeartbeatStaleTrialCallback queues a copy of it with the same
settings and run folders, which that process then resumes. See Optuna's RDBStorage and "Heartbeat
monitoring" in its documentation (https://optuna.readthedocs.io/en/stable/reference/generated/optuna.storages.RDBStorage.html).
"""

import random
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.exceptions import ExperimentalWarning
from sqlalchemy.engine import make_url

from cifar10.errors import UserError

DB_NAME = "optuna.sqlite3"
# Optuna fails a trial whose last heartbeat is older than the grace period. Its default is twice the
# interval; on a machine shared by several trainings a process can be starved for seconds, so three.
GRACE_FACTOR = 3
ATTEMPTS = 4


def default_url(logdir: Path) -> str:
    """The embedded store: nothing to start, works offline; one file for every study of the logdir."""
    path = (Path(logdir) / "sweeps" / DB_NAME).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def with_driver(url: str) -> str:
    """`postgresql://` means the psycopg (3) driver this project installs; SQLAlchemy's own default
    for that scheme is psycopg2, which it does not."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme):]
    return url


def masked(url: str) -> str:
    """The URL without its password, for messages and the report."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return "<an unparsable URL>"


def engine_kwargs(url: str) -> dict[str, Any]:
    """SQLite waits for a writer instead of failing at once; a database server that does not answer
    is an error after 10 s instead of a hang."""
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        return {"connect_args": {"timeout": 60}}
    if backend == "postgresql":
        return {"connect_args": {"connect_timeout": 10}}
    return {}


def open_storage(url: str, heartbeat_s: int | None = None) -> optuna.storages.RDBStorage:
    """The RDB storage at url; with heartbeat_s, stale trials are failed and queued again.

    Trial processes open it without a heartbeat: the sweep process that started them records it.
    Processes started together on a new database race to create Optuna's tables (the loser meets a
    unique-constraint error on the schema version), so a database error is tried again a few times.
    """
    url = with_driver(url)
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return rdb_storage(url, heartbeat_s)
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as err:
            if attempt == ATTEMPTS:
                raise_unopened(url, err)
            time.sleep(random.uniform(0.5, 2.0))
        except (optuna.exceptions.OptunaError, ImportError, ValueError, OSError) as err:
            raise_unopened(url, err)
    raise AssertionError("not reached")


def rdb_storage(url: str, heartbeat_s: int | None) -> optuna.storages.RDBStorage:
    with warnings.catch_warnings():  # heartbeats and retries are "experimental" in Optuna since 2.8
        warnings.simplefilter("ignore", ExperimentalWarning)
        kwargs: dict[str, Any] = {}
        if heartbeat_s is not None:
            kwargs = {"heartbeat_interval": heartbeat_s, "grace_period": GRACE_FACTOR * heartbeat_s,
                      # inherit the per-epoch values, so a resumed trial is judged on all its epochs
                      "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(
                          inherit_intermediate_values=True)}
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url), **kwargs)


def raise_unopened(url: str, err: BaseException) -> None:
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    raise UserError(f"cannot open the study storage {masked(url)}: {reason}. Check the URL (e.g. "
                    "postgresql://USER:PASSWORD@HOST:PORT/DB), that the database server runs and can be "
                    "reached from here, or leave out --storage for an SQLite file in the logdir.") from None
