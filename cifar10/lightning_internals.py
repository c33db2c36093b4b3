"""Every place this project reads or writes private state of Lightning or PyTorch, one function each.

Each is here because no public API gives the same thing; tests/test_lightning_internals.py fails
loudly (with the function's name) if a new version of either moves one.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import lightning as L
import torch

# LightningModule stores the name of the hook it is calling here, around every hook (44 times a step).
HOOK_NAME_ATTR = "_current_fx_name"


def batches_done(trainer: L.Trainer) -> int:
    """Training batches of the current epoch that are complete (optimizer, schedule and hooks done).

    Saved in checkpoints so that a resumed epoch skips them; Lightning keeps the count only in its loop.
    """
    return trainer.fit_loop.epoch_loop.batch_progress.current.completed


def uses_distributed_sampler(trainer: L.Trainer) -> bool:
    """Trainer(use_distributed_sampler=...): Lightning keeps the flag but exposes no property for it."""
    return bool(getattr(trainer._accelerator_connector, "use_distributed_sampler", False))


@contextmanager
def logger_step_as_at_batch_end(trainer: L.Trainer) -> Iterator[None]:
    """Around a checkpoint saved at a training batch's start: the step the loggers get, as a save at the end of the
    batch before would hold it.

    Lightning counts that step (`_batches_that_stepped`) after on_train_batch_end, and adds the one back when a
    checkpoint saved mid-epoch is resumed; one saved at the next batch's start holds it already, so without this
    every logged step of a resumed run would be one too high.
    """
    loop = trainer.fit_loop.epoch_loop
    loop._batches_that_stepped -= 1
    try:
        yield
    finally:
        loop._batches_that_stepped += 1


def skip_sigterm_broadcast(trainer: L.Trainer) -> None:
    """Turn off the SIGTERM flag Lightning 2.6's training loop broadcasts from rank 0 before every batch
    under DDP (a device tensor, a broadcast and `.item()`: a host synchronisation per step; upstream
    Lightning-AI/pytorch-lightning#21487).

    The flag is set only by Lightning's own SIGTERM handler; StopOnSignal replaces that handler and agrees
    on a stop across ranks itself, so the broadcast would always carry 0. A Lightning without the method
    needs nothing turned off.
    """
    loop = trainer.fit_loop.epoch_loop
    if hasattr(loop, SIGTERM_BROADCAST):
        setattr(loop, SIGTERM_BROADCAST, lambda: None)


SIGTERM_BROADCAST = "_broadcast_sigterm_tensor"  # _TrainingEpochLoop's method, called in advance()


def nvml_index(cuda_index: int) -> int:
    """The NVML index of a CUDA device, CUDA_VISIBLE_DEVICES (ordinals or UUIDs) taken into account.

    torch.cuda keeps this mapping private; it is needed to ask NVML about a device without initialising CUDA.
    """
    return torch.cuda._get_nvml_device_index(cuda_index)
