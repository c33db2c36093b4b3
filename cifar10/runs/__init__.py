"""Run folders (`<logdir>/<model>/version_N/`) and where to resume from.

Their metrics.json is `cifar10/runs/metrics.py`; `python -m cifar10.runs` lists them (`cifar10/runs/table.py`).
"""

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.rank_zero import rank_zero_only

from cifar10.checkpoint import build_model, read_checkpoint
from cifar10.errors import UserError
from cifar10.models.base import CHECKPOINT_FORMAT
from cifar10.runs.lock import is_locked
from cifar10.runs.metrics import METRICS_FILE, BadMetrics, read_metrics

VERSION = re.compile(r"version_(\d+)")
RECORD_KEY = "RunRecord"  # state key of cifar10.callbacks.RunRecord inside ckpt["callbacks"]
LOGGER_RUNS_KEY = "LoggerRuns"  # state key of cifar10.loggers.LoggerRuns: the MLflow / W&B runs to continue
POSITION_KEY = "CIFAR10DataModule"  # where Lightning keeps the DataModule's state_dict (its class name)


@dataclass(frozen=True)
class ResumePoint:
    """A checkpoint to resume from, the run folder it belongs to (if any) and the settings it holds, in the
    three places a checkpoint keeps them (cifar10.fit_settings.saved_layer reads them back as one layer)."""

    ckpt: Path
    model: str
    run_dir: Path | None  # <save_dir>/<name>/version_N when the checkpoint sits in a run folder
    model_hparams: dict[str, Any] = field(default_factory=dict)  # the model's hyper-parameters
    data_hparams: dict[str, Any] = field(default_factory=dict)  # the DataModule's
    run_record: dict[str, Any] = field(default_factory=dict)  # the RunRecord callback's: run and trainer settings
    logger_runs: dict[str, str] = field(default_factory=dict)  # logger name -> its run id (LoggerRuns')
    position: dict[str, Any] = field(default_factory=dict)  # the DataModule's: epoch and batches done
    status: str | None = None  # the run folder's metrics.json status (None: none there yet)
    by_last: bool = False  # found by --ckpt-path last

    @property
    def mid_epoch(self) -> bool:
        """Saved inside an epoch (a stop), not at its end: the resumed epoch skips the batches done."""
        done, total = self.position.get("batches_done", 0), self.position.get("batches_in_epoch")
        return done > 0 and (total is None or done < total)  # an older checkpoint does not say: assume inside

    @property
    def version(self) -> int | None:
        return int(VERSION.fullmatch(self.run_dir.name).group(1)) if self.run_dir else None


def version_dirs(logdir: Path, model: str) -> list[Path]:
    """Run folders of a model, oldest version first."""
    runs = [p for p in (Path(logdir) / model).glob("version_*") if VERSION.fullmatch(p.name) and p.is_dir()]
    return sorted(runs, key=lambda p: int(p.name.removeprefix("version_")))


VERSION_ENV = "CIFAR10_RUN_VERSION"  # the claimed version, inherited by the DDP processes Lightning starts


def claim_version(logdir: Path, model: str, rank: int = 0) -> int:
    """A version_N of its own for a new run: rank 0 creates the folder (mkdir is atomic, so two runs
    started at once never share one); the other processes of a DDP run take the version rank 0 claimed.
    """
    if os.environ.get(VERSION_ENV, "").isdigit():
        return int(os.environ[VERSION_ENV])
    folder = Path(logdir) / model
    existing = version_dirs(logdir, model)
    version = int(existing[-1].name.removeprefix("version_")) + 1 if existing else 0
    if rank != 0:  # launched by torchrun/SLURM without rank 0's claim: the folder name is not used to write
        return version
    folder.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            (folder / f"version_{version}").mkdir()
        except FileExistsError:
            version += 1
            continue
        return version


@contextmanager
def version_shared_with_children(version: int) -> Iterator[None]:
    """Hand the claimed version to the processes Lightning's DDP launcher starts from this one."""
    before = os.environ.get(VERSION_ENV)
    os.environ[VERSION_ENV] = str(version)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(VERSION_ENV, None)
        else:
            os.environ[VERSION_ENV] = before


def run_status(run_dir: Path) -> str | None:
    """The status a run folder's metrics.json records (finished when it records none); None without one."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return None
    try:
        return read_metrics(path).status
    except BadMetrics:
        return "unreadable"


def unfinished_checkpoint(logdir: Path, model: str) -> Path:
    """--ckpt-path last: checkpoints/last.ckpt of the one run of `model` that is unfinished (no metrics.json
    saying finished) and that no live fit is training; UserError when there is none, or several."""
    runs = version_dirs(logdir, model)
    candidates = [run for run in runs if (run / "checkpoints" / "last.ckpt").is_file() and run_status(run) != "finished"]
    # the other processes of a DDP run follow rank 0, whose lock they may already see: they skip this test
    busy = [run for run in candidates if rank_zero_only.rank == 0 and is_locked(run)]
    free = [run for run in candidates if run not in busy]
    if len(free) == 1:
        return free[0] / "checkpoints" / "last.ckpt"
    if len(free) > 1:
        listed = "; ".join(f"--ckpt-path {run / 'checkpoints' / 'last.ckpt'}" for run in reversed(free))
        raise UserError(f"--ckpt-path last is ambiguous: {len(free)} runs of {model!r} under {Path(logdir)}/{model}/ "
                        f"are unfinished. Name the one to resume: {listed}.")
    finished = [run for run in runs if run_status(run) == "finished" and (run / "checkpoints" / "last.ckpt").is_file()]
    why = [f"{', '.join(map(str, busy))} {'is' if len(busy) == 1 else 'are'} being trained right now"] if busy else []
    if finished:
        ckpt = finished[-1] / "checkpoints" / "last.ckpt"
        why.append(f"the newest finished one is {finished[-1]}: to train it further, pass --ckpt-path {ckpt} with a "
                   "larger --max-epochs")
    raise UserError(f"--ckpt-path last found no unfinished run of {model!r} to resume under {Path(logdir)}/{model}/ "
                    f"(a version_N with checkpoints/last.ckpt and no finished metrics.json)"
                    + (f"; {'; '.join(why)}" if why else "") + ". Start a new run without --ckpt-path, pass the "
                    "--model and --logdir of the run you mean, or give its checkpoint's path.")


def resumable_checkpoint(path: Path, model: str | None = None) -> tuple[str, dict[str, Any]]:
    """The model name and the checkpoint dict (weights_only load, CPU), after checking that it holds
    `model` (None: any), that its weights fit the model it names and that its format can be resumed."""
    ckpt = read_checkpoint(path)  # UserError for unreadable files and other projects' checkpoints
    saved_model = ckpt["cifar10"].get("model") if isinstance(ckpt["cifar10"], dict) else None
    if model is not None and saved_model != model:
        raise UserError(f"{path} holds a {saved_model!r} model, not {model!r}. Resume it with "
                        f"--model {saved_model}, or pick a checkpoint of {model!r}.")
    build_model(ckpt, path)
    check_resumable(ckpt, path)
    return saved_model, ckpt


def check_resumable(ckpt: dict, path: Path) -> None:
    """Refuse to resume checkpoints whose training state today's code cannot continue exactly."""
    written = ckpt["cifar10"].get("format", 1)
    if written < CHECKPOINT_FORMAT:
        raise UserError(f"{path} is a checkpoint of format {written}, written by an earlier cifar10 whose learning-rate "
                        f"schedule and random streams differ from today's (format {CHECKPOINT_FORMAT}), so it cannot be "
                        "resumed exactly. evaluate, predict and export still read it; to train on, start a new run, "
                        "or resume it with the cifar10 version that wrote it.")


def readable_checkpoints(logdir: Path, model: str) -> list[Path]:
    """Every checkpoint of `model`'s runs that loads, newest run first, last.ckpt before best.ckpt."""
    found = []
    for run in reversed(version_dirs(logdir, model)):
        for name in ("last.ckpt", "best.ckpt"):
            path = run / "checkpoints" / name
            try:
                if path.is_file() and resumable_checkpoint(path):
                    found.append(path)
            except UserError:
                pass
    return found


def read_last(path: Path, logdir: Path, model: str) -> tuple[str, dict[str, Any]]:
    """resumable_checkpoint of --ckpt-path last's file; if it is damaged, say which checkpoint still loads."""
    try:
        return resumable_checkpoint(path, model)
    except UserError as err:
        usable = readable_checkpoints(logdir, model)
        advice = (f"The newest readable checkpoint is {usable[0]}: resume it with --ckpt-path {usable[0]}."
                  if usable else f"No readable checkpoint of {model!r} is left under {Path(logdir)}/{model}/.")
        raise UserError(f"--ckpt-path last found {path}, but it cannot be read: {err} {advice}") from None


def resume_point(ckpt_path: str, logdir: Path, model: str | None) -> ResumePoint:
    """Resolve `--ckpt-path` ('last' or a file) and check it holds `model` (None: take the checkpoint's)."""
    if ckpt_path == "last":
        path = unfinished_checkpoint(logdir, model)
        saved_model, ckpt = read_last(path, logdir, model)
    else:
        path = Path(ckpt_path).expanduser()
        if not path.is_file():
            raise UserError(f"checkpoint {path} does not exist. Pass an existing .ckpt file, or "
                            "'--ckpt-path last' to resume the newest run of --model under --logdir.")
        saved_model, ckpt = resumable_checkpoint(path, model)
    run_dir = path.parent.parent
    in_run = path.parent.name == "checkpoints" and VERSION.fullmatch(run_dir.name) is not None
    position = ckpt.get(POSITION_KEY)
    return ResumePoint(path, saved_model, run_dir if in_run else None, model_hparams=dict(ckpt["hyper_parameters"]),
                       data_hparams=dict(ckpt.get("datamodule_hyper_parameters") or {}),
                       run_record=dict(ckpt.get("callbacks", {}).get(RECORD_KEY) or {}),
                       logger_runs=dict(ckpt.get("callbacks", {}).get(LOGGER_RUNS_KEY) or {}),
                       position=dict(position) if isinstance(position, dict) else {},
                       status=run_status(run_dir) if in_run else None, by_last=ckpt_path == "last")

