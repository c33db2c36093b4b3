"""Stops on request: SIGINT/SIGTERM at every phase of a step resume exactly; a second Ctrl-C stops at once;
real CLI runs stopped at random instants end like an uninterrupted run."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from test_resume import final_state

from cifar10.fit import main
from cifar10.stopping import StopOnSignal

STEPS_PER_EPOCH, EPOCHS = 4, 4


def fit_args(archive, data_dir: Path, logdir: Path, *extra: str) -> list[str]:
    return ["--data-url", archive.url, "--data-md5", archive.md5, "--data-dir", str(data_dir),
            "--model", "lenet", "--val-size", "50", "--batch-size", "32", "--accelerator", "cpu", "--seed", "3",
            "--max-epochs", str(EPOCHS), "--limit-train-batches", str(STEPS_PER_EPOCH), "--logdir", str(logdir),
            *extra]


class SignalAt(L.Callback):
    """Send this process a signal at one phase of one training step (or of an epoch's validation, save or test)."""

    def __init__(self, phase: str, epoch: int, batch: int = 0, signum: int = signal.SIGINT, times: int = 1) -> None:
        self.phase, self.epoch, self.batch, self.signum, self.times = phase, epoch, batch, signum, times
        self.sent = False

    def _maybe(self, phase: str, trainer: L.Trainer, batch_idx: int | None = None) -> None:
        at = (trainer.current_epoch, self.batch if batch_idx is None else batch_idx)
        if not self.sent and phase == self.phase and at == (self.epoch, self.batch):
            self.sent = True
            for _ in range(self.times):
                os.kill(os.getpid(), self.signum)

    def _batch(self, trainer: L.Trainer) -> int:
        return trainer.fit_loop.epoch_loop.batch_idx

    def on_fit_start(self, trainer, pl_module) -> None:  # phases the Callback API has no hook for
        optimizer_step, lr_scheduler_step = pl_module.optimizer_step, pl_module.lr_scheduler_step

        def after_optimizer_step(*args, **kwargs):
            optimizer_step(*args, **kwargs)
            self._maybe("after_optimizer_step", trainer, self._batch(trainer))

        def after_scheduler_step(*args, **kwargs):
            lr_scheduler_step(*args, **kwargs)
            self._maybe("after_scheduler_step", trainer, self._batch(trainer))

        pl_module.optimizer_step, pl_module.lr_scheduler_step = after_optimizer_step, after_scheduler_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._maybe("before_forward", trainer, batch_idx)

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self._maybe("after_forward", trainer, self._batch(trainer))

    def on_after_backward(self, trainer, pl_module) -> None:
        self._maybe("after_backward", trainer, self._batch(trainer))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self._maybe("before_optimizer_step", trainer, self._batch(trainer))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._maybe("before_batch_counter", trainer, batch_idx)  # Lightning counts the batch done after this

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._maybe("validation", trainer)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self._maybe("checkpoint_save", trainer)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._maybe("test", trainer)


def assert_same_run(a: Path, b: Path) -> None:
    """Bit-identical: the same metrics, and torch.equal on every weight of last.ckpt."""
    (metrics_a, weights_a), (metrics_b, weights_b) = final_state(a), final_state(b)
    for key in ("epochs", "test_acc", "best_val_acc", "per_class_acc"):
        assert metrics_b[key] == metrics_a[key], key
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        assert torch.equal(weights_a[name], weights_b[name]), name


# Stops in the order they happen in a 4-epoch run of 4 steps; each resumed segment is stopped by the next.
STOPS = [
    SignalAt("before_forward", 0, 1),
    SignalAt("after_forward", 0, 3, signal.SIGTERM),
    SignalAt("after_backward", 1, 0),
    SignalAt("before_optimizer_step", 1, 1),
    SignalAt("after_optimizer_step", 1, 2, signal.SIGTERM),
    SignalAt("after_scheduler_step", 1, 3),
    SignalAt("before_batch_counter", 2, 0),
    SignalAt("checkpoint_save", 2),
    SignalAt("validation", 3, signum=signal.SIGTERM),  # the last epoch's: the run stops before its test
    SignalAt("test", EPOCHS),  # the test runs after the last epoch: current_epoch is then max_epochs
]


@pytest.mark.slow
def test_a_stop_at_every_phase_resumes_exactly(tiny_archive, tmp_path, capsys):
    """One run stopped ten times, at every phase of a step and of an epoch, ends bit-identical to one never stopped."""
    data = tmp_path / "data"
    assert main(fit_args(tiny_archive, data, tmp_path / "straight")) == 0
    split = tmp_path / "split"
    last = split / "lenet" / "version_0" / "checkpoints" / "last.ckpt"
    steps = []
    for stop in STOPS:
        resume = ["--ckpt-path", "last"] if last.exists() else []
        code = main(fit_args(tiny_archive, data, split, *resume), callbacks=[stop])
        assert stop.sent, stop.phase
        assert code == {signal.SIGINT: 130, signal.SIGTERM: 143}[stop.signum], stop.phase
        assert f"Resume with: python -m cifar10.fit --ckpt-path {last}" in capsys.readouterr().err
        steps.append(torch.load(last, weights_only=True)["global_step"])
        assert not (split / "lenet" / "version_1").exists()
    assert not (split / "lenet" / "version_0" / "metrics.json").exists()
    # a stop inside a step saves after that step; one at a batch's start, after the step before it
    assert steps == [2, 4, 5, 6, 7, 8, 9, 12, 16, 16]
    assert main(fit_args(tiny_archive, data, split, "--ckpt-path", "last")) == 0
    assert_same_run(tmp_path / "straight", split)
    assert not list(split.rglob("*.partial")), "no temp file is left behind"


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once_and_keeps_the_last_consistent_checkpoint(tiny_archive, tmp_path, capsys):
    logs = tmp_path / "logs"
    code = main(fit_args(tiny_archive, tmp_path / "data", logs), callbacks=[SignalAt("after_forward", 1, 2, times=2)])
    assert code == 130
    assert "Stopped at once" in capsys.readouterr().err
    last = logs / "lenet" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == STEPS_PER_EPOCH  # the end of epoch 0
    assert main(fit_args(tiny_archive, tmp_path / "data", logs, "--ckpt-path", "last")) == 0


def test_handlers_are_put_back_after_a_run(tiny_archive, tmp_path):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    assert main(fit_args(tiny_archive, tmp_path / "data", tmp_path / "logs", "--max-epochs", "1")) == 0
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_the_first_signal_only_records_the_request(tmp_path):
    stop = StopOnSignal(tmp_path / "last.ckpt")
    stop.request(signal.SIGTERM)
    stop.request(signal.SIGTERM)  # a repeated SIGTERM is not a second Ctrl-C
    assert stop.requested == signal.SIGTERM
    with pytest.raises(KeyboardInterrupt):
        stop.request(signal.SIGINT)


def cli(archive, data: Path, logdir: Path, *extra: str) -> subprocess.Popen:
    env = os.environ | {"CIFAR10_ALLOW_SUBSET": "1"}
    return subprocess.Popen([sys.executable, "-m", "cifar10.fit", *fit_args(archive, data, logdir, *extra)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.slow
def test_cli_runs_stopped_at_random_instants_end_like_an_uninterrupted_one(tiny_archive, tmp_path):
    """SIGINT or SIGTERM to a real `python -m cifar10.fit` at random moments (start-up, training, validation,
    test), then --ckpt-path last until it finishes: the same final weights and metrics as a run never stopped."""
    data = tmp_path / "data"
    started = time.perf_counter()
    assert cli(tiny_archive, data, tmp_path / "straight").wait(timeout=600) == 0
    duration = time.perf_counter() - started  # the delays scale with this machine's speed
    rng, split, stops = random.Random(7), tmp_path / "split", 0
    for attempt in range(12):
        # resume once any run has a checkpoint: a stop before the first one leaves nothing to resume
        resume = ["--ckpt-path", "last"] if list(split.glob("lenet/version_*/checkpoints/last.ckpt")) else []
        process = cli(tiny_archive, data, split, *resume)
        time.sleep(rng.uniform(0.3, 0.95) * duration)
        signum = rng.choice([signal.SIGINT, signal.SIGTERM])
        process.send_signal(signum)
        _, err = process.communicate(timeout=600)
        if process.returncode == 0:
            break
        stops += 1
        assert "Traceback" not in err, err
        assert process.returncode in (130, 143), err
    else:
        assert cli(tiny_archive, data, split, "--ckpt-path", "last").wait(timeout=600) == 0
    assert stops >= 1, "no stop landed: the run was too short for the delays"
    # a stop before the first checkpoint leaves a run folder to resume from only if one was saved, so the
    # finished run may be version_1: compare the one that finished (and it alone finished)
    finished = [run for run in (split / "lenet").glob("version_*") if (run / "metrics.json").exists()]
    assert len(finished) == 1, finished
    if finished[0].name != "version_0":
        if (split / "lenet" / "version_0").exists():
            (split / "lenet" / "version_0").rename(split / "lenet" / "stopped_early")
        finished[0].rename(split / "lenet" / "version_0")
    assert_same_run(tmp_path / "straight", split)


class SigtermThenCtrlC(SignalAt):
    """SIGTERM, and a Ctrl-C while the run is still on its way to the stop."""

    def _maybe(self, phase: str, trainer: L.Trainer, batch_idx: int | None = None) -> None:
        if not self.sent and phase == self.phase and (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_after_sigterm_says_what_happened(tiny_archive, tmp_path, capsys):
    logs = tmp_path / "logs"
    code = main(fit_args(tiny_archive, tmp_path / "data", logs), callbacks=[SigtermThenCtrlC("after_forward", 1, 1)])
    err = capsys.readouterr().err
    last = logs / "lenet" / "version_0" / "checkpoints" / "last.ckpt"
    assert code == 130 and "Stopped at once (Ctrl-C after SIGTERM)" in err and f"--ckpt-path {last}" in err, err
    assert "before the first training step" not in err
    assert torch.load(last, weights_only=True)["global_step"] == STEPS_PER_EPOCH  # the end of epoch 0


def long_cli(archive, data: Path, logdir: Path, **streams) -> subprocess.Popen:
    """A real fit long enough to be stopped inside training once its first last.ckpt is there."""
    env = os.environ | {"CIFAR10_ALLOW_SUBSET": "1"}
    argv = [sys.executable, "-m", "cifar10.fit", *fit_args(archive, data, logdir), "--max-epochs", "200"]
    return subprocess.Popen(argv, env=env, **streams)


def wait_for(path: Path, process: subprocess.Popen) -> None:
    """Until `path` exists (the fit's first epoch is done); the fit must still be running then."""
    while not path.exists():
        assert process.poll() is None, f"the fit ended (exit {process.returncode}) before writing {path}"
        time.sleep(0.1)


@pytest.mark.slow
def test_sighup_stops_like_sigterm_and_saves(tiny_archive, tmp_path):
    """The terminal closed or the ssh session dropped: the step in flight finishes, last.ckpt is saved, exit 129."""
    logs = tmp_path / "logs"
    fit = long_cli(tiny_archive, tmp_path / "data", logs, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    last = logs / "lenet" / "version_0" / "checkpoints" / "last.ckpt"
    wait_for(last, fit)
    fit.send_signal(signal.SIGHUP)
    _, err = fit.communicate(timeout=600)
    assert fit.returncode == 129 and "Traceback" not in err, err
    assert "Stopped (SIGHUP): saved" in err and f"--ckpt-path {last}" in err
    assert not (last.parent.parent / "metrics.json").exists()


@pytest.mark.slow
def test_ctrl_c_with_the_output_piped_through_tee_saves(tiny_archive, tmp_path):
    """Ctrl-C stops `fit ... 2>&1 | tee log` as a whole: tee goes first, and the fit's messages then meet a closed
    pipe. The run must still stop as asked: last.ckpt saved, exit 130 (it was exit 1, with nothing saved)."""
    logs = tmp_path / "logs"
    tee = subprocess.Popen(["tee", str(tmp_path / "fit.log")], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    fit = long_cli(tiny_archive, tmp_path / "data", logs, stdout=tee.stdin, stderr=subprocess.STDOUT)
    tee.stdin.close()  # only the fit writes to the pipe now
    last = logs / "lenet" / "version_0" / "checkpoints" / "last.ckpt"
    wait_for(last, fit)
    tee.send_signal(signal.SIGINT)
    tee.wait(timeout=60)
    before = torch.load(last, weights_only=True)["global_step"]
    fit.send_signal(signal.SIGINT)
    assert fit.wait(timeout=600) == 130
    assert torch.load(last, weights_only=True)["global_step"] >= before
    assert not (last.parent.parent / "metrics.json").exists() and not list(logs.rglob("*.partial"))
