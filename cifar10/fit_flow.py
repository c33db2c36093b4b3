"""One fit from the command line's words to metrics.json: the settings resolved, the run folder claimed and
locked, training, the final test, the report to the loggers; and what a stop or a failure says, with its exit
code. `python -m cifar10.fit` (`cifar10.fit`) runs it; `cifar10.assembly` builds the run it trains.
"""

import contextlib
import shlex
import signal
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only

from cifar10 import loggers, reporting, runs
from cifar10.assembly import build_run, make_logger, run_folder, tested_checkpoint
from cifar10.console import say
from cifar10.errors import UserError
from cifar10.models.base import ClassifierModule
from cifar10.runs.lock import locked
from cifar10.runs.metrics import RunMetrics, write_metrics
from cifar10.fit_settings import recorded_settings, settings_from
from cifar10.settings import PATHS, Settings, check_accelerator
from cifar10.stopping import NonFiniteLoss, StopOnSignal, StopRequested, preserved_handlers


def fit_from_argv(argv: Sequence[str], callbacks: Sequence[L.Callback] = ()) -> int:
    """The fit command's work and exit code; `callbacks` are extra Lightning callbacks (tests and sweeps)."""
    settings, resume = settings_from(argv)
    try:
        return fit(settings, resume, callbacks)
    except MisconfigurationException as err:  # raised later than Trainer(...), e.g. by fit's set-up
        raise UserError(f"Lightning rejected these settings: {err}") from None
    except KeyboardInterrupt:  # outside trainer.fit and test, e.g. while downloading
        say("\nInterrupted.")
        return 130


def fit(s: Settings, resume: runs.ResumePoint | None, extra_callbacks: Sequence[L.Callback]) -> int:
    """One fit from resolved settings, in a run folder of its own (locked while it trains); its exit code."""
    check_accelerator(s.trainer.accelerator)
    L.seed_everything(s.run.seed, workers=True)
    if resume:  # the run folder's checkpoints are expected there
        warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
        # the DataModule resumes a mid-epoch checkpoint itself (it skips the batches done; see its state_dict)
        warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch")
        for note in resume_notes(s, resume) if rank_zero_only.rank == 0 else ():
            say(note)
    loggers.check_available(s.run.logger)  # a missing package: before any folder is made
    made = [] if resume and resume.run_dir else missing_folders(Path(s.run.logdir) / s.run.model)
    run_dir = run_folder(s, resume)
    opened = OpenLoggers()
    try:
        # one fit at a time in a run folder (rank 0 holds it for the processes of a DDP run)
        with locked(run_dir, say) if rank_zero_only.rank == 0 else contextlib.nullcontext():
            return guarded_run(s, resume, extra_callbacks, run_dir, opened)
    finally:  # stopped or failed before anything was written (bad settings, no data, an early signal)
        for folder in (run_dir, *made):
            with contextlib.suppress(OSError):
                folder.rmdir()  # removes a folder only while it is still empty (before the loggers close:
        loggers.close(opened.logs, opened.status)  # TensorBoard's writes hparams.yaml into a folder still there)


def resume_notes(s: Settings, resume: runs.ResumePoint) -> list[str]:
    """What a resume took, and the recorded paths it did not obey, said before it starts."""
    notes = []
    if resume.by_last:
        status = f" (metrics.json says {resume.status})" if resume.status else ""
        notes.append(f"--ckpt-path last: resuming the unfinished run {resume.run_dir}{status}.")
    if resume.status == "finished":
        notes.append(f"{resume.run_dir} is a finished run: it trains on to {s.trainer.max_epochs} epochs, and its "
                     "metrics.json is replaced when it finishes.")
    recorded, used = recorded_settings(resume), s.flat()
    differ = [key for key in PATHS if recorded.get(key) is not None and key != "logdir"
              and str(recorded[key]) != str(used[key])]
    if differ:
        shown = ", ".join(f"--{k.replace('_', '-')} {recorded[k]} (used: {used[k] or 'the official one'})" for k in differ)
        notes.append(f"the checkpoint records {shown}; paths, URLs and checksums come from the command line or the "
                     "defaults, never from a checkpoint: pass them to use them.")
    return notes


def missing_folders(folder: Path) -> list[Path]:
    """`folder` and those of its parents that do not exist yet, deepest first (removed again if left empty)."""
    return [p for p in (folder, *folder.parents) if not p.exists()]


@dataclass
class OpenLoggers:
    """A fit's loggers, and how their runs end: success, failed, or killed (stopped, to be resumed)."""

    logs: list[Logger] = field(default_factory=list)
    status: str = "failed"


def guarded_run(s: Settings, resume: runs.ResumePoint | None, extra_callbacks: Sequence[L.Callback],
                run_dir: Path, opened: OpenLoggers) -> int:
    """train_and_test with the run's loggers, a stop's message and exit code, and a non-finite loss recorded as a
    failed run."""
    try:
        opened.logs = make_logger(s, resume, run_dir)
        with runs.version_shared_with_children(int(run_dir.name.removeprefix("version_"))):
            code = train_and_test(s, resume, extra_callbacks, opened.logs, run_dir)
        opened.status = "success"
        return code
    except NonFiniteLoss as err:
        if rank_zero_only.rank == 0:
            write_metrics(run_dir, RunMetrics(s.run.model, status="failed", error=str(err), settings=s.flat()))
        raise UserError(f"{err} Run folder: {run_dir} (metrics.json says status: failed).") from None
    except StopRequested as stop:
        opened.status = "killed"
        return stopped(s, stop, run_dir)
    except StoppedAtOnce as why:
        opened.status = "killed"
        last = run_dir / "checkpoints" / "last.ckpt"
        kept = f"{last} is the one saved last before it" if last.is_file() else "no checkpoint was saved"
        say(f"\nStopped at once ({why}); {kept}." + (f"\nResume with: {resume_command(s, last)}"
                                                     if last.is_file() else ""))
        return 130


def train_and_test(s: Settings, resume: runs.ResumePoint | None, extra_callbacks: Sequence[L.Callback],
                   logs: list[Logger], run_dir: Path) -> int:
    trainer, dm, model, callbacks = build_run(s, logs, run_dir, extra_callbacks)
    stop, best, throughput = callbacks.stop, callbacks.best, callbacks.throughput
    rank_zero_only(print)(f"run folder: {run_dir}" + (f" (resuming {resume.ckpt})" if resume else ""))
    if rank_zero_only.rank == 0:
        loggers.log_hyperparams(logs, logged_params(s, model))
    lightning_call(trainer, stop, "fit", model, datamodule=dm, ckpt_path=resume.ckpt if resume else None)
    wall_time = throughput.wall_s  # of the whole run, earlier runs of it included when resumed
    curves = dict(callbacks.curves.curves)  # before the test, whose checkpoint loads the curves it was saved with
    if stop.requested is not None:  # during the last validation: training is complete and saved
        raise StopRequested(stop.requested, None, "after training, before the final test")

    tested = tested_checkpoint(dm, best)
    lightning_call(trainer, stop, "test", model, datamodule=dm, ckpt_path=tested or None)
    results = model.test_results
    metrics = RunMetrics(
        model=s.run.model, params=sum(p.numel() for p in model.parameters()),
        epochs=trainer.current_epoch, wall_time_s=round(wall_time, 2),
        train_images_per_s=round(throughput.images_per_s, 1), train_time_s=round(throughput.seconds, 2),
        best_val_acc=None if best.best_model_score is None else float(best.best_model_score),
        test_acc=float(results["acc"]), per_class_acc=results["per_class_acc"],
        recipe=s.run.recipe, seed=s.run.seed, precision=s.trainer.precision, device=device_name(trainer),
        best_ckpt=best.best_model_path, tested=tested or "final weights",
        resumed_from=str(resume.ckpt) if resume else None, status="finished", settings=s.flat(),
        curves=curves, logger_runs=loggers.LoggerRuns(logs).state_dict())
    if trainer.is_global_zero:
        log_report(logs, trainer.global_step, s, metrics, results, list(dm.class_names), run_dir)
        write_metrics(run_dir, metrics)
        print("\n" + summary(metrics) + f"\n\nrun folder: {run_dir}")
    return 0


def lightning_call(trainer: L.Trainer, stop: StopOnSignal, method: str, *args: Any, **kwargs: Any) -> None:
    """trainer.fit or trainer.test with `stop` handling the stop signals; the handlers before are put back."""
    try:
        with preserved_handlers():
            stop.install()
            getattr(trainer, method)(*args, **kwargs)
    except SystemExit:  # Lightning's answer to KeyboardInterrupt, and to SIGTERM in its set-up
        if not trainer.interrupted:
            raise
        if not stop.at_once and stop.requested in (signal.SIGTERM, signal.SIGHUP):
            raise StopRequested(stop.requested, None) from None
        first = signal.Signals(stop.requested).name if stop.requested not in (None, signal.SIGINT) else None
        raise StoppedAtOnce(f"Ctrl-C after {first}" if first else "second Ctrl-C") from None


class StoppedAtOnce(Exception):
    """Ctrl-C after a stop request: Lightning stopped wherever it was (it raises SystemExit for KeyboardInterrupt).
    The message says what came first."""


def device_name(trainer: L.Trainer) -> str:
    device = trainer.strategy.root_device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    return f"{device.type} x{trainer.num_devices} ({name})"


def logged_params(s: Settings, model: ClassifierModule) -> dict[str, Any]:
    """The hyper-parameters every logger gets: the HPARAMS view of the settings and the parameter count."""
    return s.hparams_view() | {"params": sum(p.numel() for p in model.parameters())}


def log_report(logs: list[Logger], step: int, s: Settings, metrics: RunMetrics,
               results: dict[str, Any], class_names: list[str], run_dir: Path) -> None:
    """Test figures, the final metrics (with the hyper-parameters where a logger shows them together, as
    TensorBoard's HPARAMS tab does) and, with --log-checkpoints, the checkpoints as artifacts."""
    wrong = results["misclassified"]
    loggers.log_figures(logs, {
        "test/per_class_accuracy": reporting.per_class_accuracy_figure(metrics.per_class_acc),
        "test/confusion_matrix": reporting.confusion_matrix_figure(results["confusion"], class_names),
        "test/misclassified": reporting.misclassified_figure(wrong["images"], wrong["preds"], wrong["targets"],
                                                             class_names)}, step)
    params = s.hparams_view() | {"params": metrics.params}
    loggers.log_final(logs, params, {"hp/test_acc": metrics.test_acc,
                                     "hp/best_val_acc": metrics.best_val_acc or 0.0}, step)
    if s.run.log_checkpoints:
        saved = [run_dir / "checkpoints" / name for name in ("best.ckpt", "last.ckpt")]
        loggers.log_files(logs, [path for path in saved if path.is_file()], "checkpoints")


def summary(m: RunMetrics) -> str:
    rows = [["model", m.model], ["parameters", f"{m.params:,}"], ["epochs", m.epochs],
            ["wall time", f"{m.wall_time_s:.1f} s"], ["images/s", f"{m.train_images_per_s:,.0f}"],
            ["best validation accuracy", percent(m.best_val_acc)], ["test accuracy", percent(m.test_acc)]]
    classes = [[name, percent(acc)] for name, acc in m.per_class_acc.items()]
    return reporting.format_table(["", ""], rows) + "\n\n" + reporting.format_table(["class", "test accuracy"],
                                                                                    classes)


def percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.2f}%"


def stopped(s: Settings, stop: StopRequested, run_dir: Path) -> int:
    """The message after a stop on request, and its exit code (130 SIGINT, 143 SIGTERM, 129 SIGHUP)."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if stop.saved:
        what = f"saved {stop.saved} after the step in flight"
    elif last.is_file() and stop.where:
        what = f"stopped {stop.where}; the training is saved in {last}"
    elif last.is_file():
        what = f"stopped before training went on; {last} is as it was"
    else:
        what = f"stopped before the first training step; nothing was saved in {run_dir}"
    resume = f"\nResume with: {resume_command(s, last)}" if last.is_file() else ""
    if rank_zero_only.rank == 0:
        say(f"\nStopped ({stop}): {what}.{resume}")
    return stop.exit_code


def resume_command(s: Settings, last: Path) -> str:
    """The command that resumes this very run: its checkpoint by path, and the data flags this run was given."""
    words = ["python", "-m", "cifar10.fit", "--ckpt-path", str(last), "--data-dir", s.data.data_dir]
    words += ["--data-url", s.data.url] if s.data.url else []
    words += ["--data-md5", s.data.md5] if s.data.md5 else []
    return shlex.join(words)
