"""Building a run from resolved settings: its folder, its loggers, then the Trainer, the DataModule (data
read), the model and the callbacks of a fit.

`python -m cifar10.fit` runs what `build_run` builds (`cifar10.fit_flow`), and the benchmarks time the same
(`cifar10.bench.loop`, `cifar10.bench.speedrun`), so what they measure is what a fit runs.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only

from cifar10 import loggers, runs
from cifar10.callbacks import (AugmentedImages, BatchSeed, EpochCurves, NoProfiler, ProgressBar, RunCheckpoint,
                               RunRecord, Throughput)
from cifar10.data import CIFAR10DataModule
from cifar10.errors import UserError
from cifar10.files import AtomicCheckpointIO
from cifar10.gpu import guard_callbacks, set_fast_matmul, skip_nvml_check_without_nvml
from cifar10.lightning_internals import skip_callback_hooks_nobody_overrides
from cifar10.models import create_model
from cifar10.models.base import ClassifierModule
from cifar10.settings import Settings
from cifar10.stopping import FiniteLoss, StopOnSignal


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


@dataclass(frozen=True)
class FitCallbacks:
    """A fit's callbacks, in order, with the ones whose state the command reads afterwards by name."""

    stop: StopOnSignal
    best: ModelCheckpoint
    throughput: Throughput
    curves: EpochCurves
    all: list[L.Callback]


def build_run(s: Settings, logger: Logger | list[Logger], run_dir: Path, extra_callbacks: Sequence[L.Callback] = (),
              **trainer_overrides: Any) -> tuple[L.Trainer, CIFAR10DataModule, ClassifierModule, FitCallbacks]:
    """Trainer, DataModule (data read), model and callbacks of a fit from resolved settings.
    `trainer_overrides` go to L.Trainer (benchmarks shorten runs)."""
    logs = logger if isinstance(logger, list) else [logger]
    callbacks = fit_callbacks(s, run_dir, [*extra_callbacks, loggers.LoggerRuns(logs)])
    trainer = make_trainer(s, logger, callbacks.all, **trainer_overrides)  # before the download: bad settings fail fast
    set_fast_matmul(trainer.strategy.root_device)
    dm = make_datamodule(s)
    dm.prepare_data()
    dm.setup("fit")  # mean/std of the training split go into the model's hyper-parameters
    trainer.log_every_n_steps = log_interval(dm, s.data.batch_size)
    return trainer, dm, make_model(s, dm), callbacks


def fit_callbacks(s: Settings, run_dir: Path, extra: Sequence[L.Callback] = ()) -> FitCallbacks:
    best, last = checkpoint_callbacks(run_dir / "checkpoints")
    throughput, stop, curves = Throughput(), StopOnSignal(run_dir / "checkpoints" / "last.ckpt"), EpochCurves()
    return FitCallbacks(stop, best, throughput, curves, [
        stop,  # first: it stops at a batch's start, before the other callbacks' per-batch work
        best, last, LearningRateMonitor(logging_interval="step"), BatchSeed(s.run.seed), throughput, AugmentedImages(),
        FiniteLoss(), RunRecord(s.run_record()), curves,
        ProgressBar(), *extra, *guard_callbacks()])  # the sync-debug guard last: see SyncDebug


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


def make_trainer(s: Settings, logger: Logger | list[Logger], callbacks: list[L.Callback],
                 **overrides: Any) -> L.Trainer:
    try:
        trainer = L.Trainer(**{
            **s.trainer.trainer_kwargs(), "logger": logger, "callbacks": callbacks, "default_root_dir": s.run.logdir,
            "plugins": [AtomicCheckpointIO()],  # same-folder temp file + rename: a kill never damages a checkpoint
            "profiler": NoProfiler(),
            "use_distributed_sampler": False,  # the DataModule shards the data itself under DDP
            **overrides})
    except (MisconfigurationException, ValueError) as err:
        raise UserError(f"Lightning rejected these settings: {err} Check --accelerator, --devices, --strategy "
                        "and --precision.") from None
    # With deterministic algorithms on (always on the CPU), PyTorch by default also fills every new tensor
    # with NaN, a debugging aid against reads of uninitialised memory: a fifth of a speedrun-muon step on
    # the 2-core CPU (aten::fill_ under torch.profiler). The algorithms stay deterministic without it.
    torch.utils.deterministic.fill_uninitialized_memory = False
    skip_callback_hooks_nobody_overrides()  # four of a step's six callback hooks: nobody's
    skip_nvml_check_without_nvml()  # a failed library load at every Adam step, on a machine without a driver
    return trainer


def make_datamodule(s: Settings) -> CIFAR10DataModule:
    return CIFAR10DataModule(s.data)


def log_interval(dm: CIFAR10DataModule, batch_size: int) -> int:
    """Steps between logged values: a few times an epoch even on tiny data, at most 50."""
    steps_per_epoch = -(-len(dm.train_labels) // batch_size)
    return max(1, min(50, steps_per_epoch // 4))


def make_model(s: Settings, dm: CIFAR10DataModule) -> ClassifierModule:
    """The model section, with the data's channel statistics and class names (read by dm.setup)."""
    model = create_model(s.run.model, s.model, mean=tuple(dm.mean), std=tuple(dm.std), class_names=list(dm.class_names))
    if s.trainer.compile:
        model.net.compile()  # in place: checkpoint keys stay free of "_orig_mod."
        # ModelSummary's forward of this batch of 1 would be a compilation of its own (and a new shape)
        model.example_input_array = None
    return model


def tested_checkpoint(dm: CIFAR10DataModule, best: ModelCheckpoint) -> str:
    """The checkpoint a fit's final test loads: the best by val/acc, unless validation ran on the test split
    (then "": the final weights, as they are)."""
    return best.best_model_path if dm.val_images is not None else ""
