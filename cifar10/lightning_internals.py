"""Every place this project reads or writes private state of Lightning or PyTorch, one function each.

Each is here because no public API gives the same thing; tests/test_lightning_internals.py fails
loudly (with the function's name) if a new version of either moves one.
"""

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer import call as lightning_call

# LightningModule stores the name of the hook it is calling here, around every hook (about 38 times a step).
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


def skip_callback_hooks_nobody_overrides() -> None:
    """Make Lightning's callback dispatch return at once for a hook that no callback of the trainer overrides.

    Lightning's loops call every callback hook through `lightning.pytorch.trainer.call._call_callback_hooks`,
    which visits every callback, `Callback`'s empty methods included, each under a profiler context named
    from its state_key: about 15 us a hook with fit's dozen callbacks on the 2-core CPU. Four hooks of every
    training step (on_before_backward, on_after_backward, on_before_optimizer_step, on_before_zero_grad) have
    no callback of fit's that overrides them. A hook that some callback overrides goes to Lightning's own
    dispatch unchanged, with every callback in order. Idempotent; the whole process's trainers get it.
    """
    if getattr(lightning_call._call_callback_hooks, "skips_unused_hooks", False):
        return
    dispatch = lightning_call._call_callback_hooks

    @functools.wraps(dispatch)
    def call_callback_hooks(trainer: L.Trainer, hook_name: str, *args: Any, **kwargs: Any) -> None:
        if any(_overrides(callback, hook_name) for callback in trainer.callbacks):
            dispatch(trainer, hook_name, *args, **kwargs)

    call_callback_hooks.skips_unused_hooks = True
    lightning_call._call_callback_hooks = call_callback_hooks


def _overrides(callback: L.Callback, hook_name: str) -> bool:
    """Whether the callback's class, or the callback itself, defines the hook rather than Callback's empty one."""
    return _class_overrides(type(callback), hook_name) or hook_name in getattr(callback, "__dict__", ())


@functools.cache
def _class_overrides(cls: type, hook_name: str) -> bool:
    return getattr(cls, hook_name, None) is not getattr(L.Callback, hook_name, None)
