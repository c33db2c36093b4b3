"""`python -m cifar10.fit`: train one model with a recipe, log it (TensorBoard by default; `cifar10.loggers`), test
the best checkpoint.

Its flags, their layers and sections are `cifar10.settings`; `build_run` turns the sections into the
Trainer, DataModule, model and callbacks (what the benchmarks time too).
"""

import signal
import sys

from cifar10.console import exit_quietly_on_signals, ignore_signals, say, unbreakable_output

if __name__ == "__main__":  # before the heavy imports below: a signal while they load ends quietly too
    exit_quietly_on_signals()

import contextlib  # noqa: E402
import shlex  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import lightning as L  # noqa: E402
import torch  # noqa: E402
from lightning.fabric.utilities.exceptions import MisconfigurationException  # noqa: E402
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint  # noqa: E402
from lightning.pytorch.loggers import Logger  # noqa: E402
from lightning.pytorch.utilities import rank_zero_only  # noqa: E402

from cifar10 import loggers, reporting, runs  # noqa: E402
from cifar10.callbacks import (AugmentedImages, BatchSeed, EpochCurves, NoProfiler, ProgressBar,  # noqa: E402
                               RunCheckpoint, RunRecord, Throughput)
from cifar10.data import CIFAR10DataModule  # noqa: E402
from cifar10.errors import UserError, exits_cleanly  # noqa: E402
from cifar10.files import AtomicCheckpointIO  # noqa: E402
from cifar10.gpu import guard_callbacks, set_fast_matmul  # noqa: E402
from cifar10.models import create_model  # noqa: E402
from cifar10.models.base import ClassifierModule  # noqa: E402
from cifar10.runs.lock import locked  # noqa: E402
from cifar10.settings import PATHS, Settings, check_accelerator, recorded_settings, settings_from  # noqa: E402
from cifar10.settings import build_parser  # noqa: E402,F401 (the command's parser: gpu-check reads it)
from cifar10.stopping import FiniteLoss, NonFiniteLoss, StopOnSignal, StopRequested, preserved_handlers  # noqa: E402


def make_datamodule(s: Settings) -> CIFAR10DataModule:
    return CIFAR10DataModule(s.data)


def make_model(s: Settings, dm: CIFAR10DataModule) -> ClassifierModule:
    """The model section, with the data's channel statistics and class names (read by dm.setup)."""
    model = create_model(s.run.model, s.model, mean=tuple(dm.mean), std=tuple(dm.std), class_names=list(dm.class_names))
    if s.trainer.compile:
        model.net.compile()  # in place: checkpoint keys stay free of "_orig_mod."
        # ModelSummary's forward of this batch of 1 would be a compilation of its own (and a new shape)
        model.example_input_array = None
    return model


def run_folder(s: Settings, resume: runs.ResumePoint | None) -> Path:
    """`<logdir>/<model>/version_N`, TensorBoard's layout whichever loggers run: the folder the resumed checkpoint
    is in, else a version of its own."""
    if resume and resume.run_dir:
        return resume.run_dir
    try:
        version = runs.claim_version(Path(s.run.logdir), s.run.model, rank_zero_only.rank)
    except OSError as err:  # read-only, or a file where a folder should be
        raise UserError(f"cannot make a run folder in {Path(s.run.logdir) / s.run.model} ({err.strerror}): make it "
                        "a writable folder, or pass another --logdir. Nothing was run.") from None
    return Path(s.run.logdir) / s.run.model / f"version_{version}"


def make_logger(s: Settings, resume: runs.ResumePoint | None, run_dir: Path) -> list[Logger]:
    """The --logger loggers, continuing the MLflow / W&B runs of the resumed checkpoint."""
    return loggers.build_loggers(s.run, run_dir, resume.logger_runs if resume else {})


def make_trainer(s: Settings, logger: Logger | list[Logger], callbacks: list[L.Callback],
                 **overrides: Any) -> L.Trainer:
    try:
        return L.Trainer(**{
            **s.trainer.trainer_kwargs(), "logger": logger, "callbacks": callbacks, "default_root_dir": s.run.logdir,
            "plugins": [AtomicCheckpointIO()],  # same-folder temp file + rename: a kill never damages a checkpoint
            "profiler": NoProfiler(),
            "use_distributed_sampler": False,  # the DataModule shards the data itself under DDP
            **overrides})
    except (MisconfigurationException, ValueError) as err:
        raise UserError(f"Lightning rejected these settings: {err} Check --accelerator, --devices, --strategy "
                        "and --precision.") from None


def checkpoint_callbacks(folder: Path) -> tuple[ModelCheckpoint, ModelCheckpoint]:
    """best.ckpt (best val/acc) and last.ckpt (every epoch's end, for resuming).

    last.ckpt is a checkpoint of its own without a monitor: ModelCheckpoint's save_last writes it only
    at the epochs that also write a best checkpoint (Lightning 2.6), which would resume from the past.
    """
    best = RunCheckpoint(dirpath=folder, filename="best", monitor="val/acc", mode="max", save_top_k=1,
                         auto_insert_metric_name=False, enable_version_counter=False)
    last = RunCheckpoint(dirpath=folder, filename="last", monitor=None, save_top_k=1,
                         auto_insert_metric_name=False, enable_version_counter=False)
    return best, last


def log_interval(dm: CIFAR10DataModule, batch_size: int) -> int:
    """Steps between logged values: a few times an epoch even on tiny data, at most 50."""
    steps_per_epoch = -(-len(dm.train_labels) // batch_size)
    return max(1, min(50, steps_per_epoch // 4))


class StoppedAtOnce(Exception):
    """Ctrl-C after a stop request: Lightning stopped wherever it was (it raises SystemExit for KeyboardInterrupt).
    The message says what came first."""


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


def device_name(trainer: L.Trainer) -> str:
    device = trainer.strategy.root_device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    return f"{device.type} x{trainer.num_devices} ({name})"


def percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.2f}%"


def summary(metrics: dict[str, Any]) -> str:
    rows = [["model", metrics["model"]], ["parameters", f"{metrics['params']:,}"], ["epochs", metrics["epochs"]],
            ["wall time", f"{metrics['wall_time_s']:.1f} s"], ["images/s", f"{metrics['train_images_per_s']:,.0f}"],
            ["best validation accuracy", percent(metrics["best_val_acc"])],
            ["test accuracy", percent(metrics["test_acc"])]]
    classes = [[name, percent(acc)] for name, acc in metrics["per_class_acc"].items()]
    return reporting.format_table(["", ""], rows) + "\n\n" + reporting.format_table(["class", "test accuracy"],
                                                                                    classes)


def logged_params(s: Settings, model: ClassifierModule) -> dict[str, Any]:
    """The hyper-parameters every logger gets: the HPARAMS view of the settings and the parameter count."""
    return s.hparams_view() | {"params": sum(p.numel() for p in model.parameters())}


def log_report(logs: list[Logger], step: int, s: Settings, metrics: dict[str, Any],
               results: dict[str, Any], class_names: list[str], run_dir: Path) -> None:
    """Test figures, the final metrics (with the hyper-parameters where a logger shows them together, as
    TensorBoard's HPARAMS tab does) and, with --log-checkpoints, the checkpoints as artifacts."""
    wrong = results["misclassified"]
    loggers.log_figures(logs, {
        "test/per_class_accuracy": reporting.per_class_accuracy_figure(metrics["per_class_acc"]),
        "test/confusion_matrix": reporting.confusion_matrix_figure(results["confusion"], class_names),
        "test/misclassified": reporting.misclassified_figure(wrong["images"], wrong["preds"], wrong["targets"],
                                                             class_names)}, step)
    params = s.hparams_view() | {"params": metrics["params"]}
    loggers.log_final(logs, params, {"hp/test_acc": metrics["test_acc"],
                                     "hp/best_val_acc": metrics["best_val_acc"] or 0.0}, step)
    if s.run.log_checkpoints:
        saved = [run_dir / "checkpoints" / name for name in ("best.ckpt", "last.ckpt")]
        loggers.log_files(logs, [path for path in saved if path.is_file()], "checkpoints")


def missing_folders(folder: Path) -> list[Path]:
    """`folder` and those of its parents that do not exist yet, deepest first (removed again if left empty)."""
    return [p for p in (folder, *folder.parents) if not p.exists()]


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


def fit(s: Settings, resume: runs.ResumePoint | None, extra_callbacks: Sequence[L.Callback]) -> int:
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
            runs.write_metrics(run_dir, {"model": s.run.model, "status": "failed", "error": str(err),
                                         "settings": s.flat()})
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


@dataclass(frozen=True)
class FitCallbacks:
    """A fit's callbacks, in order, with the ones whose state the command reads afterwards by name."""

    stop: StopOnSignal
    best: ModelCheckpoint
    throughput: Throughput
    curves: EpochCurves
    all: list[L.Callback]


def fit_callbacks(s: Settings, run_dir: Path, extra: Sequence[L.Callback] = ()) -> FitCallbacks:
    best, last = checkpoint_callbacks(run_dir / "checkpoints")
    throughput, stop, curves = Throughput(), StopOnSignal(run_dir / "checkpoints" / "last.ckpt"), EpochCurves()
    return FitCallbacks(stop, best, throughput, curves, [
        stop,  # first: it stops at a batch's start, before the other callbacks' per-batch work
        best, last, LearningRateMonitor(logging_interval="step"), BatchSeed(s.run.seed), throughput, AugmentedImages(),
        FiniteLoss(), RunRecord(s.run_record()), curves,
        ProgressBar(), *extra, *guard_callbacks()])  # the sync-debug guard last: see SyncDebug


def build_run(s: Settings, logger: Logger | list[Logger], run_dir: Path, extra_callbacks: Sequence[L.Callback] = (),
              **trainer_overrides: Any) -> tuple[L.Trainer, CIFAR10DataModule, ClassifierModule, FitCallbacks]:
    """Trainer, DataModule (data read), model and callbacks of a fit from resolved settings; what `fit`
    runs, and what the benchmarks time. `trainer_overrides` go to L.Trainer (benchmarks shorten runs)."""
    logs = logger if isinstance(logger, list) else [logger]
    callbacks = fit_callbacks(s, run_dir, [*extra_callbacks, loggers.LoggerRuns(logs)])
    trainer = make_trainer(s, logger, callbacks.all, **trainer_overrides)  # before the download: bad settings fail fast
    set_fast_matmul(trainer.strategy.root_device)
    dm = make_datamodule(s)
    dm.prepare_data()
    dm.setup("fit")  # mean/std of the training split go into the model's hyper-parameters
    trainer.log_every_n_steps = log_interval(dm, s.data.batch_size)
    return trainer, dm, make_model(s, dm), callbacks


def train_and_test(s: Settings, resume: runs.ResumePoint | None, extra_callbacks: Sequence[L.Callback],
                   logs: list[Logger], run_dir: Path) -> int:
    trainer, dm, model, callbacks = build_run(s, logs, run_dir, extra_callbacks)
    stop, best, throughput = callbacks.stop, callbacks.best, callbacks.throughput
    rank_zero_only(print)(f"run folder: {run_dir}" + (f" (resuming {resume.ckpt})" if resume else ""))
    if rank_zero_only.rank == 0:
        loggers.log_hyperparams(logs, logged_params(s, model))
    lightning_call(trainer, stop, "fit", model, datamodule=dm, ckpt_path=resume.ckpt if resume else None)
    wall_time = throughput.wall_s  # of the whole run, earlier sessions included when resumed
    curves = dict(callbacks.curves.curves)  # before the test, whose checkpoint loads the curves it was saved with
    if stop.requested is not None:  # during the last validation: training is complete and saved
        raise StopRequested(stop.requested, None, "after training, before the final test")

    # the best checkpoint by val/acc, unless validation ran on the test split: then the final weights
    tested = best.best_model_path if dm.val_images is not None else ""
    lightning_call(trainer, stop, "test", model, datamodule=dm, ckpt_path=tested or None)
    results = model.test_results
    metrics = {
        "model": s.run.model, "params": sum(p.numel() for p in model.parameters()),
        "epochs": trainer.current_epoch, "wall_time_s": round(wall_time, 2),
        "train_images_per_s": round(throughput.images_per_s, 1), "train_time_s": round(throughput.seconds, 2),
        "best_val_acc": None if best.best_model_score is None else float(best.best_model_score),
        "test_acc": float(results["acc"]), "per_class_acc": results["per_class_acc"],
        "recipe": s.run.recipe, "seed": s.run.seed, "precision": s.trainer.precision, "device": device_name(trainer),
        "best_ckpt": best.best_model_path, "tested": tested or "final weights",
        "resumed_from": str(resume.ckpt) if resume else None, "status": "finished", "settings": s.flat(),
        "curves": curves, "logger_runs": loggers.LoggerRuns(logs).state_dict(),
    }
    if trainer.is_global_zero:
        log_report(logs, trainer.global_step, s, metrics, results, list(dm.class_names), run_dir)
        runs.write_metrics(run_dir, metrics)
        print("\n" + summary(metrics) + f"\n\nrun folder: {run_dir}")
    return 0


def resume_command(s: Settings, last: Path) -> str:
    """The command that resumes this very run: its checkpoint by path, and the data flags this run was given."""
    words = ["python", "-m", "cifar10.fit", "--ckpt-path", str(last), "--data-dir", s.data.data_dir]
    words += ["--data-url", s.data.url] if s.data.url else []
    words += ["--data-md5", s.data.md5] if s.data.md5 else []
    return shlex.join(words)


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


@exits_cleanly
def main(argv: Sequence[str] | None = None, *, callbacks: Sequence[L.Callback] = ()) -> int:
    """The fit CLI; `callbacks` are extra Lightning callbacks (tests use them)."""
    with unbreakable_output():  # a closed pipe (tee stopped by the same Ctrl-C) must not end a run unsaved
        settings, resume = settings_from(sys.argv[1:] if argv is None else argv)
        try:
            return fit(settings, resume, callbacks)
        except MisconfigurationException as err:  # raised later than Trainer(...), e.g. by fit's set-up
            raise UserError(f"Lightning rejected these settings: {err}") from None
        except KeyboardInterrupt:  # outside trainer.fit and test, e.g. while downloading
            say("\nInterrupted.")
            return 130


if __name__ == "__main__":
    code = main()
    ignore_signals()
    sys.exit(code)
