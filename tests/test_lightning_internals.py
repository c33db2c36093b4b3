"""The private state cifar10.lightning_internals reads: each test fails loudly if Lightning or PyTorch moves it."""

import lightning as L
import pytest
import torch

from cifar10 import lightning_internals as internals


class Record(L.Callback):
    def __init__(self) -> None:
        self.done = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.done.append(internals.batches_done(trainer))


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        return self.layer(batch).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit_tiny(callback: L.Callback, **trainer_args) -> L.Trainer:
    trainer = L.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, callbacks=[callback], **trainer_args)
    trainer.fit(Tiny(), train_dataloaders=torch.utils.data.DataLoader(torch.rand(5, 4), batch_size=None))
    return trainer


def test_batch_counter_follows_the_epoch():
    record = Record()
    fit_tiny(record)
    assert record.done == [0, 1, 2, 3, 4] * 2, "batches_done moved in Lightning"


@pytest.mark.parametrize("flag", [True, False])
def test_the_distributed_sampler_flag_is_read_back(flag):
    trainer = L.Trainer(accelerator="cpu", logger=False, use_distributed_sampler=flag)
    assert internals.uses_distributed_sampler(trainer) is flag, "use_distributed_sampler moved in Lightning"


def test_the_hook_name_attribute_exists():
    assert internals.HOOK_NAME_ATTR in vars(L.LightningModule()), "LightningModule renamed _current_fx_name"


class SaveAtBatchStart(L.Callback):
    def __init__(self) -> None:
        self.seen = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        with internals.logger_step_as_at_batch_end(trainer):
            saved = trainer.fit_loop.epoch_loop.on_save_checkpoint()  # what a checkpoint holds
            self.seen.append(saved["_batches_that_stepped"])


def test_the_logger_step_is_counted_where_lightning_saves_it():
    save = SaveAtBatchStart()
    trainer = fit_tiny(save)
    assert save.seen == [-1, *range(9)], "Lightning's _batches_that_stepped moved"
    assert trainer.fit_loop.epoch_loop._batches_that_stepped == 10  # put back


def test_the_sigterm_broadcast_is_the_method_the_training_loop_calls():
    """Lightning 2.6 broadcasts a SIGTERM flag before every DDP batch through this method; if a new version
    renames or inlines it, skip_sigterm_broadcast would silently do nothing, so this fails instead."""
    import inspect

    from lightning.pytorch.loops.training_epoch_loop import _TrainingEpochLoop

    assert hasattr(_TrainingEpochLoop, internals.SIGTERM_BROADCAST), "the SIGTERM broadcast moved in Lightning"
    assert f"self.{internals.SIGTERM_BROADCAST}()" in inspect.getsource(_TrainingEpochLoop.advance), \
        "the training loop no longer calls the SIGTERM broadcast"
    trainer = L.Trainer(accelerator="cpu", logger=False)
    internals.skip_sigterm_broadcast(trainer)
    assert getattr(trainer.fit_loop.epoch_loop, internals.SIGTERM_BROADCAST)() is None  # no collective, no raise


def test_the_nvml_index_of_a_cuda_device_follows_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    assert internals.nvml_index(0) == 3 and internals.nvml_index(1) == 1, "torch.cuda moved _get_nvml_device_index"


class Names(L.pytorch.profilers.PassThroughProfiler):
    """A profiler recording the name of every hook call Lightning makes through it."""

    def __init__(self) -> None:
        super().__init__()
        self.names = []

    def profile(self, action_name):
        self.names.append(action_name)
        return super().profile(action_name)


class AfterBackward(L.Callback):
    def __init__(self) -> None:
        self.calls = 0

    def on_after_backward(self, trainer, pl_module) -> None:
        self.calls += 1


def test_the_loops_dispatch_callback_hooks_through_the_function_the_guard_wraps():
    import inspect

    from lightning.pytorch.loops import training_epoch_loop
    from lightning.pytorch.loops.optimization import automatic

    for module in (training_epoch_loop, automatic):
        assert "call._call_callback_hooks(" in inspect.getsource(module), \
            f"{module.__name__} no longer calls callback hooks through lightning.pytorch.trainer.call"


def test_hooks_nobody_overrides_are_skipped_and_the_others_all_run():
    internals.skip_callback_hooks_nobody_overrides()
    internals.skip_callback_hooks_nobody_overrides()  # idempotent: wrapped once
    from lightning.pytorch.trainer import call
    assert not getattr(call._call_callback_hooks.__wrapped__, "skips_unused_hooks", False)

    profiler, plain, overriding = Names(), Record(), AfterBackward()
    instance_hook = Record()
    instance_hook.on_before_zero_grad = lambda trainer, pl_module, optimizer: instance_hook.done.append("zero")
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, profiler=profiler,
                        callbacks=[plain, overriding, instance_hook])
    trainer.fit(Tiny(), train_dataloaders=torch.utils.data.DataLoader(torch.rand(3, 4), batch_size=None))
    assert overriding.calls == 3 and instance_hook.done.count("zero") == 3  # overridden: every step, both kinds
    called = {name.rsplit(".", 1)[-1] for name in profiler.names if name.startswith("[Callback]")}
    assert {"on_train_batch_start", "on_after_backward", "on_before_zero_grad"} <= called
    assert not called & {"on_before_backward", "on_before_optimizer_step"}, "hooks nobody overrides were dispatched"
    # a hook that one callback overrides reaches every callback, in order, through Lightning's own dispatch
    after = [name for name in profiler.names if name.endswith(".on_after_backward")]
    assert after[:3] == ["[Callback]Record.on_after_backward", "[Callback]AfterBackward.on_after_backward",
                         "[Callback]Record.on_after_backward"]
