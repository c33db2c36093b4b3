"""Lightning callbacks of the fit command (checkpoints, per-batch seeding, throughput, an image grid, the
curves, a progress bar), and the profiler its Trainer runs with."""

import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.profilers import PassThroughProfiler

from cifar10 import loggers
from cifar10.seeds import GLOBAL_STREAM, stream_seed
from cifar10.gpu import syncs_allowed
from cifar10.reporting import CURVE_TAGS, labelled_grid


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, whose saved state names its files relative to its own folder.

    Lightning saves the absolute paths of the best and last checkpoints and, resumed in another folder,
    reloads only best_model_path, still absolute (ModelCheckpoint.load_state_dict): a copied or moved run
    folder would test a file that is not there. Here the state holds file names, read back inside the
    folder this callback writes to now; a name whose file is not there (a checkpoint resumed outside its
    run folder) starts the tracking afresh. Nothing outside that folder can be named, whatever the state says.
    """

    PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The key Lightning's ModelCheckpoint saves its state under (its class name first), so checkpoints
        # written with it resume into this one. Computed once: Lightning reads it at every hook call (about
        # seven a step), and ModelCheckpoint builds it from a dict's repr each time.
        self._state_key = "ModelCheckpoint" + super().state_key.removeprefix(type(self).__qualname__)

    @property
    def state_key(self) -> str:
        return self._state_key

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state |= {key: Path(state[key]).name if state[key] else "" for key in self.PATH_KEYS}
        state["best_k_models"] = {Path(path).name: score for path, score in state["best_k_models"].items()}
        return state | {"dirpath": "."}  # "." : names relative to the folder of the checkpoint's run

    def load_state_dict(self, state: dict[str, Any]) -> None:
        here = Path(self.dirpath)

        def inside(path: Any) -> str:  # the file of that name in this folder, if it is there
            name = Path(str(path or "")).name
            return str(here / name) if name and (here / name).is_file() else ""

        state = dict(state) | {key: inside(state.get(key)) for key in self.PATH_KEYS}
        models = {inside(path): score for path, score in dict(state.get("best_k_models") or {}).items()}
        state["best_k_models"] = {path: score for path, score in models.items() if path}
        if not state["best_model_path"]:  # nothing to compare new scores with: as a fresh run
            state |= {"best_model_score": None, "kth_value": self.kth_value, "best_k_models": {}}
        super().load_state_dict(state | {"dirpath": self.dirpath})


class BatchSeed(L.Callback):
    """Reseed the global torch RNG (dropout) from (seed, epoch, batch, rank) before each training batch.

    The random numbers of a batch then do not depend on what ran before it, so a run resumed from a
    checkpoint, even one saved mid-epoch by Ctrl-C, draws the same numbers as one never interrupted.
    Seeding is host-side bookkeeping, also for CUDA generators: no device synchronisation.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        seed = stream_seed(self.seed, trainer.current_epoch, GLOBAL_STREAM, trainer.global_rank, batch_idx)
        # Only the generators this process draws from: torch.manual_seed also queries every other device
        # kind and CUDA generator, which costs about 0.7 ms a call on a CUDA build (measured, bench loop).
        torch.default_generator.manual_seed(seed)
        device = pl_module.device
        if device.type == "cuda":
            torch.cuda.default_generators[device.index or 0].manual_seed(seed)


class Throughput(L.Callback):
    """Training images per second (images seen / time in training steps, validation excluded) and the
    fit's wall time, both carried across a resume in the checkpoint.

    The device is synchronised only where the clock stops (validation start, epoch end), never per step.
    """

    def __init__(self) -> None:
        self.images = 0
        self.seconds = 0.0
        self._started: float | None = None  # when the running clock started; None while stopped
        self._wall_before = 0.0  # wall seconds of the run before this fit resumed it
        self._fit_started = time.perf_counter()

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    @property
    def wall_s(self) -> float:
        return self._wall_before + time.perf_counter() - self._fit_started

    def state_dict(self) -> dict[str, float]:
        running = time.perf_counter() - self._started if self._started is not None else 0.0
        return {"images": self.images, "seconds": self.seconds + running, "wall_s": self.wall_s}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.images, self.seconds, self._wall_before = int(state["images"]), state["seconds"], state["wall_s"]

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_started = time.perf_counter()

    def _start(self) -> None:
        self._started = time.perf_counter()

    def _stop(self, trainer: L.Trainer) -> None:
        if self._started is None:
            return
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)
        self.seconds += time.perf_counter() - self._started
        self._started = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._started is None:  # the first batch of an epoch, after validation, or of a resumed epoch
            self._start()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        self.images += batch[1].shape[0] * trainer.world_size

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop(trainer)


class AugmentedImages(L.Callback):
    """Log the first augmented training batch once a run (not again when it is resumed), as a grid of images
    labelled with their class names, to every logger that takes images (cifar10.loggers decides how).

    The batch arrives as augmented uint8 pixels (the model normalises its own input).
    """

    def __init__(self, tag: str = "train/augmented_images", max_images: int = 32) -> None:
        self.tag = tag
        self.max_images = max_images
        self.logged = False

    # in the checkpoint: a resumed run has its grid already
    def state_dict(self) -> dict[str, bool]:
        return {"logged": self.logged}

    def load_state_dict(self, state: dict[str, bool]) -> None:
        self.logged = bool(state["logged"])

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self.logged or not trainer.loggers or not trainer.is_global_zero:
            return
        self.logged = True
        images, labels = batch[0][: self.max_images], batch[1][: self.max_images]
        names = [trainer.datamodule.class_names[i] for i in labels.tolist()]
        loggers.log_image(trainer.loggers, self.tag, labelled_grid(images, names), trainer.global_step)


class ProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, refreshed every `interval_s` seconds during training instead of every N steps.

    Each refresh formats the bar and reads the shown values back from the device, so refreshing by
    time keeps that cost per second, not per step, whether a step takes 100 ms or 1 ms.
    """

    def __init__(self, interval_s: float = 0.5) -> None:
        super().__init__(refresh_rate=10)  # validation and test bars: every 10 batches
        self.interval_s = interval_s
        self._next_refresh = 0.0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        bar, now = self.train_progress_bar, time.monotonic()
        if bar is None or bar.disable or (now < self._next_refresh and batch_idx + 1 != bar.total):
            return
        self._next_refresh = now + self.interval_s
        bar.n = batch_idx + 1
        bar.refresh()
        with syncs_allowed():  # the shown values are read back from the device
            bar.set_postfix(self.get_metrics(trainer, pl_module))


class RunRecord(L.Callback):
    """Store the run and trainer settings in every checkpoint (ckpt["callbacks"]["RunRecord"]), flag-named.

    The model's and the data's settings are in their own hyper-parameters; with these, a resumed run
    starts from all of them, so it keeps its recipe and overrides unless flags change them.
    """

    def __init__(self, record: dict[str, Any]) -> None:
        self.record = dict(record)  # Settings.run_record()

    def state_dict(self) -> dict[str, Any]:
        return self.record


class EpochCurves(L.Callback):
    """Each epoch's train and validation loss and accuracy ({tag: {epoch: value}}), kept in the checkpoint so a
    resumed run has every epoch: metrics.json's `curves`, what evaluate draws whichever loggers the run had.

    Read at the epoch's end, after its validation, where Lightning has computed the epoch's values anyway.
    """

    def __init__(self, tags: tuple[str, ...] = tuple(CURVE_TAGS)) -> None:
        self.tags = tags
        self.curves: dict[str, dict[str, float]] = {}  # epoch numbers as strings: JSON's keys

    def state_dict(self) -> dict[str, Any]:
        return {"curves": self.curves}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.curves = {tag: dict(values) for tag, values in state["curves"].items()}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for tag in self.tags:
            if (value := trainer.callback_metrics.get(tag)) is not None:
                self.curves.setdefault(tag, {})[str(trainer.current_epoch)] = float(value)


class NoProfiler(PassThroughProfiler):
    """Lightning's default do-nothing profiler, without the cost of doing nothing.

    Lightning wraps every hook call in `profiler.profile(name)`, about 45 a training step with fit's
    callbacks (about 100 before hooks that no callback overrides were skipped: lightning_internals); the
    default builds a generator-based context manager each time (0.98 us against 0.16 us for one shared
    null context, measured on the 2-core CPU), so this saves about 40 us a step.
    """

    _nothing = nullcontext()

    def profile(self, action_name: str) -> nullcontext:
        return self._nothing
