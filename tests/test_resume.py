"""Checkpoint and resume: an interrupted run, resumed, ends where an uninterrupted one does."""

import json
import os
import signal
from pathlib import Path

import lightning as L
import pytest
import torch

from cifar10.fit import main
from cifar10.settings import flag_names


def tiny_fit_args(archive, data_dir: Path, logdir: Path, *extra: str) -> list[str]:
    return ["--data-url", archive.url, "--data-md5", archive.md5, "--data-dir", str(data_dir),
            "--model", "lenet", "--val-size", "50", "--batch-size", "32", "--accelerator", "cpu",
            "--seed", "3", "--logdir", str(logdir), *extra]


def final_state(logdir: Path) -> tuple[dict, dict]:
    run_dir = logdir / "lenet" / "version_0"
    weights = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    return json.loads((run_dir / "metrics.json").read_text()), weights


def assert_same_run(a: Path, b: Path) -> None:
    (metrics_a, weights_a), (metrics_b, weights_b) = final_state(a), final_state(b)
    assert metrics_b["epochs"] == metrics_a["epochs"]
    assert metrics_b["test_acc"] == metrics_a["test_acc"]
    assert metrics_b["best_val_acc"] == metrics_a["best_val_acc"]
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        assert torch.allclose(weights_a[name], weights_b[name], atol=1e-6), name


@pytest.mark.slow
def test_resumed_run_ends_like_an_uninterrupted_one(tiny_archive, tmp_path):
    """2 epochs then --max-epochs 4 from last.ckpt == 4 epochs straight (lenet has dropout).

    A constant learning rate: a schedule spans the epochs the run was started with.
    """
    data = tmp_path / "data"
    args = lambda logdir, *extra: tiny_fit_args(tiny_archive, data, logdir, "--schedule", "none",
                                                     "--limit-train-batches", "4", *extra)  # noqa: E731
    assert main(args(tmp_path / "straight", "--max-epochs", "4")) == 0
    assert main(args(tmp_path / "split", "--max-epochs", "2")) == 0
    finished = tmp_path / "split" / "lenet" / "version_0" / "checkpoints" / "last.ckpt"  # trained on by its path
    assert main(args(tmp_path / "split", "--max-epochs", "4", "--ckpt-path", str(finished))) == 0
    assert not (tmp_path / "split" / "lenet" / "version_1").exists(), "resume must reuse the run folder"
    assert_same_run(tmp_path / "straight", tmp_path / "split")


class InterruptAt(L.Callback):
    """Ctrl-C (a real SIGINT to this process) during the forward pass of a given training step."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        if (trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_idx) == (self.epoch, self.batch):
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_the_run_resumes(tiny_archive, tmp_path, capsys):
    data, logs = tmp_path / "data", tmp_path / "logs"
    args = tiny_fit_args(tiny_archive, data, logs, "--max-epochs", "3")
    assert main(args, callbacks=[InterruptAt(epoch=1, batch=3)]) == 130
    last = logs / "lenet" / "version_0" / "checkpoints" / "last.ckpt"
    assert last.is_file()
    # 250 images / 32 = 8 steps an epoch; the step in flight (batch 3) finishes before the save
    assert torch.load(last, weights_only=True)["global_step"] == 8 + 4
    err = capsys.readouterr().err
    assert f"--ckpt-path {last}" in err

    throughput = torch.load(last, weights_only=True)["callbacks"]["Throughput"]
    assert throughput["images"] == (8 + 4) * 32 - 6 and throughput["seconds"] > 0  # 8 batches of 32, 1 of 26

    assert main([*args, "--ckpt-path", "last"]) == 0
    metrics = json.loads((logs / "lenet" / "version_0" / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and metrics["resumed_from"] == str(last)
    assert metrics["wall_time_s"] > throughput["wall_s"] and metrics["train_time_s"] > throughput["seconds"]


@pytest.mark.slow
def test_max_epochs_can_be_raised_under_a_one_cycle_schedule(tiny_archive, tmp_path):
    data, logs = tmp_path / "data", tmp_path / "logs"
    args = tiny_fit_args(tiny_archive, data, logs, "--schedule", "onecycle", "--limit-train-batches", "3")
    assert main([*args, "--max-epochs", "1"]) == 0
    finished = logs / "lenet" / "version_0" / "checkpoints" / "last.ckpt"
    assert main([*args, "--max-epochs", "2", "--ckpt-path", str(finished)]) == 0
    metrics = json.loads((logs / "lenet" / "version_0" / "metrics.json").read_text())
    assert metrics["epochs"] == 2


def test_last_checkpoint_is_the_end_of_the_last_epoch(tiny_archive, tmp_path):
    logs = tmp_path / "logs"
    # lr 1e-30 keeps val/acc flat after the first epoch (no float32 weight moves), so later epochs write no
    # new best.ckpt (lr 0 itself is refused)
    assert main(tiny_fit_args(tiny_archive, tmp_path / "data", logs, "--max-epochs", "3", "--lr", "1e-30",
                              "--limit-train-batches", "2")) == 0
    checkpoints = logs / "lenet" / "version_0" / "checkpoints"
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 3 * 2
    assert torch.load(checkpoints / "best.ckpt", weights_only=True)["global_step"] == 2


@pytest.mark.slow
def test_run_interrupted_mid_epoch_ends_like_an_uninterrupted_one(tiny_archive, tmp_path):
    """Ctrl-C at batch 3 of epoch 1, then --ckpt-path last == 3 epochs straight (dropout, crop-flip, one-cycle)."""
    data = tmp_path / "data"
    args = lambda logdir: tiny_fit_args(tiny_archive, data, logdir, "--max-epochs", "3")  # noqa: E731
    assert main(args(tmp_path / "straight")) == 0
    assert main(args(tmp_path / "split"), callbacks=[InterruptAt(epoch=1, batch=3)]) == 130
    assert main([*args(tmp_path / "split"), "--ckpt-path", "last"]) == 0
    assert_same_run(tmp_path / "straight", tmp_path / "split")


def test_a_checkpoint_holds_each_setting_once_and_resuming_reads_them_back(tiny_archive, tmp_path):
    data, logs = tmp_path / "data", tmp_path / "logs"
    assert main(tiny_fit_args(tiny_archive, data, logs, "--max-epochs", "1", "--limit-train-batches", "2",
                              "--lr", "0.004", "--augment", "flip", "--label-smoothing", "0.1")) == 0
    run_dir = logs / "lenet" / "version_0"
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    model, data_part, record = ckpt["hyper_parameters"], ckpt["datamodule_hyper_parameters"], ckpt["callbacks"]["RunRecord"]
    assert (model["lr"], model["label_smoothing"], data_part["augment"], record["max_epochs"]) == (0.004, 0.1, "flip", 1)
    places = [set(flag_names("model").values()) & set(model), {flag_names("data")[k] for k in data_part}, set(record)]
    assert all(not (a & b) - {"seed"} for i, a in enumerate(places) for b in places[i + 1:])  # one flag, two sections
    written = json.loads((run_dir / "metrics.json").read_text())["settings"]
    assert {k: written[k] for k in set().union(*places)} == {**{k: model[k] for k in places[0]}, **record,
                                                             **{flag_names("data")[k]: v for k, v in data_part.items()}}
    last = str(run_dir / "checkpoints" / "last.ckpt")
    data_flags = ["--data-url", tiny_archive.url, "--data-md5", tiny_archive.md5, "--data-dir", str(data)]
    assert main(["--ckpt-path", last, "--max-epochs", "2", *data_flags]) == 0  # paths: never from the checkpoint
    resumed = json.loads((run_dir / "metrics.json").read_text())["settings"]
    assert resumed == written | {"max_epochs": 2, "ckpt_path": last}  # every other setting read back
