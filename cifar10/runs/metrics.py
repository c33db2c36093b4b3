"""metrics.json, a run folder's record: what fit writes when a run ends, and what the runs table and
gpu-check read back.

`RunMetrics` is its one definition. A run that finished records every figure (null where unknown); a
failed one its settings and the error; a pruned sweep trial how far it got. Reading takes what a file
holds: keys it does not know are left aside, keys an older run lacks take their defaults, and a value of
the wrong kind makes the file unreadable (`BadMetrics`, saying which key).
"""

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from cifar10.files import NotReadable, atomic_write_text, read_bounded

METRICS_FILE = "metrics.json"
METRICS_LIMIT = 1 << 20  # fit writes a few kB; a bigger metrics.json is not one of its files


class BadMetrics(Exception):
    """A metrics.json that cannot be read as a run's: the message says why."""


@dataclass(frozen=True)
class RunMetrics:
    """One run's record, in metrics.json's key order (accuracies as fractions of 1, None: unknown)."""

    model: str
    params: int | None = None
    epochs: int | None = None  # epochs trained
    wall_time_s: float | None = None  # the whole run, its earlier stopped and resumed parts included
    train_images_per_s: float | None = None
    train_time_s: float | None = None  # training steps only: no validation, no test
    best_val_acc: float | None = None
    test_acc: float | None = None
    per_class_acc: dict[str, float] = field(default_factory=dict)
    recipe: str | None = None
    seed: int | None = None
    precision: str | None = None
    device: str | None = None
    best_ckpt: str | None = None
    tested: str | None = None  # the checkpoint test_acc was measured on, or "final weights"
    resumed_from: str | None = None
    status: str = "finished"  # finished, failed, pruned; older runs record none: finished
    settings: dict[str, Any] = field(default_factory=dict)  # Settings.flat() of the run
    curves: dict[str, Any] = field(default_factory=dict)  # per-epoch loss and accuracy (cifar10.callbacks)
    logger_runs: dict[str, str] = field(default_factory=dict)  # logger name -> its run id (MLflow, W&B)
    error: str | None = None  # failed: why
    pruned_at_epoch: int | None = None  # pruned: the epoch the sweep's pruner stopped it after
    reason: str | None = None  # pruned: the pruner's words

    def to_json(self) -> dict[str, Any]:
        """The keys a run of this status records: every figure for a finished run, the others' own."""
        recorded = RECORDED.get(self.status, FINISHED)
        return {k: v for k, v in asdict(self).items() if k in recorded}

    @classmethod
    def from_json(cls, data: Any) -> "RunMetrics":
        """The record a parsed metrics.json holds; BadMetrics when a known key holds the wrong kind of value."""
        if not isinstance(data, dict):
            raise BadMetrics(f"metrics.json holds a {type(data).__name__}, not an object of run metrics")
        known = {f.name: f for f in fields(cls)}
        values = {key: READERS[known[key].type](key, value) for key, value in data.items()
                  if key in known and value is not None}
        return cls(**{"model": "", **values})

    def setting(self, name: str) -> Any:
        """A setting of the run: its own field where metrics.json records one, else its settings' entry (a
        failed run records little more than its settings)."""
        value = getattr(self, name, None)
        return self.settings.get(name) if value in (None, "") else value


def finite_number(key: str, value: Any, kind: type = float) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadMetrics(f"its {key!r} is {value!r}, not a finite number")  # json reads NaN, and 1e400 as inf
    return kind(value)


def _integer(key: str, value: Any) -> int:
    return finite_number(key, value, int)


def _text(key: str, value: Any) -> str:
    return str(value)


def _mapping(key: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise BadMetrics(f"its {key!r} is a {type(value).__name__}, not an object")
    return value


READERS = {  # a field's type -> how a JSON value becomes one
    str: _text, str | None: _text, int | None: _integer, float | None: finite_number,
    dict[str, float]: _mapping, dict[str, Any]: _mapping, dict[str, str]: _mapping,
}
FINISHED = {f.name for f in fields(RunMetrics)} - {"error", "pruned_at_epoch", "reason"}
RECORDED = {  # the keys of the records that are not a finished run's (null where unknown)
    "failed": {"model", "status", "error", "settings"},
    "pruned": {"model", "status", "pruned_at_epoch", "epochs", "best_val_acc", "test_acc", "recipe", "seed",
               "reason", "settings"},
}


def read_metrics(path: Path) -> RunMetrics:
    """A metrics.json, bounded in size and depth; BadMetrics when it is not one fit could have written."""
    return RunMetrics.from_json(read_metrics_json(path))


def read_metrics_json(path: Path) -> dict[str, Any]:
    """A metrics.json's object as written, once it reads as a RunMetrics (bounded, each known key of its kind):
    what the queue of runs and the sweep pass on as JSON lines; BadMetrics otherwise."""
    try:
        data = json.loads(read_bounded(path, METRICS_LIMIT))
    except NotReadable as err:
        raise BadMetrics(str(err).replace(f"{path} ", f"{METRICS_FILE} ", 1)) from None
    except UnicodeDecodeError as err:
        raise BadMetrics(f"{METRICS_FILE} is not UTF-8 text ({err.reason})") from None
    except json.JSONDecodeError as err:
        raise BadMetrics(f"{METRICS_FILE} is not valid JSON ({err})") from None
    except RecursionError:
        raise BadMetrics(f"{METRICS_FILE} is nested too deeply to be a run's") from None
    RunMetrics.from_json(data)  # raises BadMetrics for a known key of the wrong kind
    return data


def write_metrics(run_dir: Path, metrics: RunMetrics) -> Path:
    """Write metrics.json into the run folder (atomically: a crash leaves the previous one whole)."""
    return atomic_write_text(Path(run_dir) / METRICS_FILE, json.dumps(metrics.to_json(), indent=2) + "\n")
