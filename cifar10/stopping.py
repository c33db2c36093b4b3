"""Stopping a run on request, at a point where it can resume exactly: SIGINT/SIGTERM/SIGHUP and a non-finite loss.

A signal only records the request. The run stops at the next training batch boundary: at the start
of the next batch, before any of its work, when everything of the previous batch (optimizer and
schedule steps, the model's own batch-end hooks, the batch counter) is done. It saves `last.ckpt`
there and raises `StopRequested`. A request during validation lets validation and the epoch's
checkpoints finish first; one during the final test stops the test. A SIGINT after any request raises
KeyboardInterrupt at once: nothing more is saved, and last.ckpt stays the last consistent one.
SIGHUP (the terminal closed, an ssh session dropped) is a request like SIGTERM.
"""

import math
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L

from cifar10.console import say
from cifar10.errors import UserError
from cifar10.lightning_internals import logger_step_as_at_batch_end, skip_sigterm_broadcast

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}  # 128 + the signal's number, as shells say


class StopRequested(Exception):
    """Raised at a batch boundary after a stop was requested; `saved` is the checkpoint written, if any, and
    `where` says when the stop came if not at a training batch ("during the final test")."""

    def __init__(self, signum: int, saved: Path | None, where: str = "") -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum, self.saved, self.where = signum, saved, where

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.signum]


class NonFiniteLoss(UserError):
    """The training loss became nan or inf."""


class StopOnSignal(L.Callback):
    """Turn SIGINT, SIGTERM and SIGHUP into a stop at the next batch boundary, with last.ckpt saved there.

    Install them before trainer.fit and trainer.test, inside `preserved_handlers()` (which puts back
    what was there before); the callback takes them back after Lightning installs its own.
    """

    def __init__(self, last_ckpt: Path) -> None:
        self.last_ckpt = Path(last_ckpt)
        self.requested: int | None = None  # the signal number of the first request
        self.at_once = False  # a Ctrl-C after the request stopped the run where it was

    def request(self, signum: int, frame: Any = None) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            self.at_once = True
            raise KeyboardInterrupt  # Ctrl-C after a request: stop at once
        if self.requested is None:
            self.requested = signum
            # say(): a handler runs inside the training step, where a closed pipe must not raise
            say(f"\n{signal.Signals(signum).name}: stopping after the step in flight and saving {self.last_ckpt} "
                "(Ctrl-C again to stop at once, without saving)")

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():  # Python allows handlers only there
            for signum in EXIT_CODES:
                signal.signal(signum, self.request)

    # Lightning installs its own SIGTERM handler after on_fit_start: take the signals back from there on
    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.install()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.install()
        skip_sigterm_broadcast(trainer)  # our handler owns SIGTERM now: Lightning's flag is never set

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.install()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._stop_now(trainer):
            with logger_step_as_at_batch_end(trainer):  # a resumed run then logs its steps where this one would
                trainer.save_checkpoint(self.last_ckpt)  # every rank takes part; rank 0 writes
            raise StopRequested(self.requested or signal.SIGTERM, self.last_ckpt)

    def _stop_now(self, trainer: L.Trainer) -> bool:
        """The request, agreed by all processes under DDP (at logging steps only: it costs a collective)."""
        if trainer.world_size == 1:
            return self.requested is not None
        if trainer.global_step % trainer.log_every_n_steps:
            return False
        return trainer.strategy.reduce_boolean_decision(self.requested is not None, all=False)

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.requested is not None:
            raise StopRequested(self.requested, None, "during the final test")


@contextmanager
def preserved_handlers() -> Iterator[None]:
    """Put the handlers of the stop signals back as they were, whatever happens inside."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {signum: signal.getsignal(signum) for signum in EXIT_CODES}
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


class FiniteLoss(L.Callback):
    """Stop with NonFiniteLoss when the training loss is nan or inf.

    Checked only where Lightning reads values back anyway (the steps it logs, and the epoch's mean),
    so it adds no host synchronisation per step on a GPU.
    """

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step % trainer.log_every_n_steps or not isinstance(outputs, dict):
            return
        loss = float(outputs["loss"])  # read back at logging steps only, as Lightning's logger does
        finite = math.isfinite(loss)
        # Under DDP every rank must stop at the same step: one rank raising alone leaves the others
        # waiting in their next collective until its timeout (30 minutes by default).
        if trainer.world_size > 1 and not trainer.strategy.reduce_boolean_decision(finite, all=True):
            raise self.error(trainer, "non-finite on another process" if finite else loss,
                             f"at step {trainer.global_step}")
        if not finite:
            raise self.error(trainer, loss, f"at step {trainer.global_step}")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loss = trainer.callback_metrics.get("train/loss_epoch")
        if loss is not None and not math.isfinite(float(loss)):
            raise self.error(trainer, float(loss), f"as the mean of epoch {trainer.current_epoch}")

    @staticmethod
    def error(trainer: L.Trainer, value: float | str, where: str) -> NonFiniteLoss:
        lr = ", ".join(f"{group['lr']:.3g}" for opt in trainer.optimizers for group in opt.param_groups)
        return NonFiniteLoss(f"the training loss became {value} {where} (learning rate now {lr}), so training "
                             "stopped and the run is marked failed. Lower --lr (or use --schedule onecycle, which "
                             "warms up), check --weight-decay, or try --precision 32.")
