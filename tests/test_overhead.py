"""What a training step costs around its math: the overhead benchmark, time-based progress refresh, logging at
the steps Lightning writes, cheap per-batch seeds, and the Lightning attribute the fast path relies on."""

import json
import os
import time

import lightning as L
import pytest
import torch

from cifar10.bench.__main__ import main as bench_main
from cifar10.callbacks import ProgressBar
from cifar10.seeds import stream_seed
from cifar10.fit import main as fit_main
from cifar10.models import create_model
from cifar10.lightning_internals import HOOK_NAME_ATTR as LIGHTNING_HOOK_NAME_ATTR


def test_overhead_benchmark_reports_milliseconds_a_step_for_both_sides(tiny_archive, tmp_path, capsys):
    from cifar10.data.download import ensure_extracted
    ensure_extracted(tmp_path, tiny_archive.url, tiny_archive.md5)
    assert bench_main(["loop", "--overhead", "--model", "mlp", "--recipe", "tutorial", "--batches", "40",  # no aug
                       "--repeats", "1", "--data-dir", str(tmp_path), "--accelerator", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["network"] == "one linear layer" and result["batch_size"] == 4 and result["batches"] == 40
    assert result["lightning_step_ms"] > 0 and result["plain_step_ms"] > 0
    assert result["overhead_step_ms"] == pytest.approx(result["lightning_step_ms"] - result["plain_step_ms"], abs=1e-3)
    assert result["overhead_step_ms_median"] == pytest.approx(result["overhead_step_ms"], abs=1e-3)  # one round
    assert result["lightning_train_loss"] == pytest.approx(result["plain_train_loss"], rel=1e-3)  # the same training


def test_overhead_profile_lists_the_callbacks_and_hooks_per_step(tiny_archive, tmp_path, capsys):
    from cifar10.data.download import ensure_extracted
    ensure_extracted(tmp_path, tiny_archive.url, tiny_archive.md5)
    assert bench_main(["loop", "--overhead", "--profile", "--batches", "30", "--data-dir", str(tmp_path),
                       "--accelerator", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "ms a step under cProfile" in out and "cifar10/callbacks.py" in out and "training_step" in out


class FakeBar:
    def __init__(self, total: int) -> None:
        self.total, self.n, self.disable, self.refreshes = total, 0, False, 0

    def refresh(self) -> None:
        self.refreshes += 1

    def set_postfix(self, metrics) -> None:
        pass


def test_the_training_bar_refreshes_by_time_and_at_the_epochs_end(monkeypatch):
    bar = ProgressBar(interval_s=60.0)
    fake = FakeBar(total=500)
    monkeypatch.setattr(ProgressBar, "train_progress_bar", property(lambda self: fake))
    monkeypatch.setattr(ProgressBar, "get_metrics", lambda self, trainer, module: {})
    for batch_idx in range(500):
        bar.on_train_batch_end(None, None, None, None, batch_idx)
    assert fake.refreshes == 2 and fake.n == 500  # the first batch, then none for 60 s, then the last one
    bar.interval_s, bar._next_refresh = 0.0, 0.0
    bar.on_train_batch_end(None, None, None, None, 3)
    time.sleep(0.001)
    bar.on_train_batch_end(None, None, None, None, 4)
    assert fake.refreshes == 4


class RecordLosses(L.Callback):
    def __init__(self) -> None:
        self.losses, self.sizes = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))
        self.sizes.append(len(batch[1]))


def test_epoch_loss_and_accuracy_are_the_image_weighted_means_and_steps_log_at_the_interval(tiny_archive, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    record = RecordLosses()
    args = ["--data-url", tiny_archive.url, "--data-md5", tiny_archive.md5, "--data-dir", str(tmp_path / "data"),
            "--model", "mlp", "--max-epochs", "1", "--val-size", "50", "--batch-size", "32", "--accelerator", "cpu",
            "--logdir", str(tmp_path / "logs")]
    assert fit_main(args, callbacks=[record]) == 0
    events = EventAccumulator(str(tmp_path / "logs" / "mlp" / "version_0"), size_guidance={"scalars": 0})
    events.Reload()
    epoch_loss = events.Scalars("train/loss_epoch")[0].value
    expected = sum(loss * n for loss, n in zip(record.losses, record.sizes)) / sum(record.sizes)
    assert epoch_loss == pytest.approx(expected, rel=1e-5)
    steps = [e.step for e in events.Scalars("train/loss_step")]
    assert steps == [1, 3, 5, 7]  # 250 images / 32 = 8 steps, logged every 8 // 4 = 2 (Lightning's step numbering)
    assert 0 <= events.Scalars("train/acc")[0].value <= 1


def test_per_batch_seeds_are_distinct_and_stable():
    seeds = {stream_seed(0, epoch, stream, rank, batch) for epoch in range(3) for stream in range(4)
             for rank in range(2) for batch in (None, *range(20))}
    assert len(seeds) == 3 * 4 * 2 * 21 and all(0 <= s < 2**63 for s in seeds)
    assert stream_seed(7, 1, 2, 0, 5) == stream_seed(7, 1, 2, 0, 5)


def test_lightning_still_records_the_hook_name_the_fast_path_expects(tiny_archive, tmp_path):
    """ClassifierModule.__setattr__ short-cuts this one attribute; if Lightning renames it, this fails."""
    seen = []

    class Spy(L.Callback):
        def on_before_backward(self, trainer, pl_module, loss) -> None:
            seen.append(pl_module.__dict__.get(LIGHTNING_HOOK_NAME_ATTR, "missing"))

    model = create_model("mlp")
    data = [(torch.rand(4, 3, 32, 32), torch.randint(0, 10, (4,)))] * 2
    model.configure_optimizers = lambda: torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, callbacks=[Spy()])
    trainer.fit(model, train_dataloaders=torch.utils.data.DataLoader(data, batch_size=None))
    assert seen and all(name == "on_before_backward" for name in seen), seen  # the hook being called
    assert LIGHTNING_HOOK_NAME_ATTR in vars(L.LightningModule()), "LightningModule no longer sets it in __init__"


def test_fit_runs_its_trainer_with_one_shared_null_context_for_every_profiled_hook(tiny_archive, tmp_path):
    """Lightning wraps each hook call in trainer.profiler.profile(name); fit's profiler hands back one shared
    null context instead of building a context manager ~90 times a step. The run still trains and saves."""
    from cifar10.callbacks import NoProfiler

    seen = []

    class Spy(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            seen.append(trainer.profiler)

    args = ["--data-url", tiny_archive.url, "--data-md5", tiny_archive.md5, "--data-dir", str(tmp_path / "data"),
            "--model", "mlp", "--max-epochs", "1", "--val-size", "50", "--batch-size", "64", "--accelerator", "cpu",
            "--logdir", str(tmp_path / "logs")]
    assert fit_main(args, callbacks=[Spy()]) == 0
    profiler = seen[0]
    assert isinstance(profiler, NoProfiler) and all(p is profiler for p in seen)
    assert profiler.profile("[Callback]Spy.on_train_batch_end") is profiler.profile("training_step")
    with profiler.profile("run_training_batch") as entered:
        assert entered is None
    assert (tmp_path / "logs" / "mlp" / "version_0" / "checkpoints" / "last.ckpt").exists()


def test_without_nvml_cuda_is_counted_without_trying_to_load_it_each_time(monkeypatch):
    import ctypes

    from cifar10.gpu import NVML_CHECK_ENV, skip_nvml_check_without_nvml
    monkeypatch.setenv(NVML_CHECK_ENV, "1")  # as `import lightning` leaves it
    available = torch.cuda.is_available()
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
        has_nvml = True
    except OSError:
        has_nvml = False
    skip_nvml_check_without_nvml()
    assert torch.cuda.is_available() == available  # the same answer either way
    assert os.environ[NVML_CHECK_ENV] == ("1" if has_nvml or torch.version.hip else "0")


def test_fits_trainer_skips_the_callback_hooks_nobody_overrides(tmp_path):
    from lightning.pytorch.trainer import call

    from cifar10.assembly import make_trainer
    from cifar10.fit_settings import resolved
    make_trainer(resolved({"model": "mlp", "accelerator": "cpu", "logdir": str(tmp_path)}), False, [])
    assert getattr(call._call_callback_hooks, "skips_unused_hooks", False)
