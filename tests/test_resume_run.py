"""A resumed run is that run: changed settings reach the optimizer (or are refused), --ckpt-path last and the
printed command name the run that stopped, a checkpoint chooses no paths, a moved run folder finishes, and
one fit at a time trains in a run folder."""

import json
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from test_reliability import assert_one_paragraph
from test_stopping import SignalAt

from cifar10.fit import main
from cifar10.schedules import lr_factor
from cifar10.runs.lock import LOCK_NAME


def mlp_args(archive, data: Path, logdir: Path, *extra: str) -> list[str]:
    return ["--data-url", archive.url, "--data-md5", archive.md5, "--data-dir", str(data), "--model", "mlp",
            "--val-size", "50", "--batch-size", "32", "--accelerator", "cpu", "--seed", "3",
            "--limit-train-batches", "3", "--logdir", str(logdir), *extra]


def run_of(logdir: Path, version: int = 0) -> Path:
    return logdir / "mlp" / f"version_{version}"


def last_of(logdir: Path, version: int = 0) -> Path:
    return run_of(logdir, version) / "checkpoints" / "last.ckpt"


def metrics_of(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


@pytest.fixture(scope="module")
def stopped_logdir(tiny_archive, tmp_path_factory) -> tuple[Path, Path]:
    """(logdir, data): an mlp run of 2 epochs of 3 steps stopped by SIGTERM inside epoch 1, after step 4."""
    root = tmp_path_factory.mktemp("stopped")
    data, logdir = root / "data", root / "logs"
    with pytest.MonkeyPatch.context() as mp:  # module fixtures start before conftest's autouse one
        mp.setenv("CIFAR10_ALLOW_SUBSET", "1")
        code = main(mlp_args(tiny_archive, data, logdir, "--max-epochs", "2"),
                    callbacks=[SignalAt("after_forward", 1, 1, signal.SIGTERM)])
    assert code == 143 and torch.load(last_of(logdir), weights_only=True)["global_step"] == 5
    return logdir, data


def copy_of(stopped: tuple[Path, Path], tmp_path: Path) -> Path:
    """A copy of the stopped run's logdir (copied the way `cp -a` does) of this test's own."""
    logdir = tmp_path / "logs"
    shutil.copytree(stopped[0], logdir, symlinks=True)
    return logdir


# --- every setting applied, or refused ---------------------------------------------------------------

class FirstStep(L.Callback):
    """What a run trains with at its first training step: the optimizer's groups, the batch, the data and loss."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if hasattr(self, "step"):
            return
        self.step = trainer.global_step
        self.groups = [{k: g[k] for k in ("lr", "momentum", "weight_decay")} for g in trainer.optimizers[0].param_groups]
        self.batch_images = len(batch[1])
        self.augment = trainer.datamodule.augment
        self.label_smoothing = pl_module.hparams.label_smoothing


def logged_lr(run: Path) -> dict[int, float]:
    """step -> learning rate, as LearningRateMonitor wrote it to TensorBoard."""
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    (tag,) = [t for t in events.Tags()["scalars"] if t.startswith("lr-")]
    return {e.step: e.value for e in events.Scalars(tag)}


@pytest.mark.slow
def test_settings_changed_on_resume_reach_the_optimizer_the_schedule_and_the_record(tiny_archive, tmp_path):
    data, logs = tmp_path / "data", tmp_path / "logs"
    assert main(mlp_args(tiny_archive, data, logs, "--max-epochs", "1")) == 0  # 3 steps at lr 0.02, momentum 0.9
    seen = FirstStep()
    changed = ["--lr", "0.3", "--momentum", "0.1", "--weight-decay", "0.5", "--batch-size", "16",
               "--augment", "none", "--label-smoothing", "0.2"]
    assert main(mlp_args(tiny_archive, data, logs, "--ckpt-path", str(last_of(logs)), "--max-epochs", "2",
                         *changed), callbacks=[seen]) == 0
    run = run_of(logs)
    factor = lr_factor("onecycle", 2 * 3)  # the schedule of the new run length: 2 epochs of 3 steps
    assert seen.step == 3 and seen.groups == [{"lr": 0.3 * factor(3), "momentum": 0.1, "weight_decay": 0.5}]
    assert (seen.batch_images, seen.augment, seen.label_smoothing) == (16, "none", 0.2)

    lrs, first = logged_lr(run), lr_factor("onecycle", 3)  # the first session: 1 epoch of 3 steps
    assert any(step >= 3 for step in lrs), lrs
    for step, lr in lrs.items():  # float32 in the event file
        assert lr == pytest.approx(0.02 * first(step) if step < 3 else 0.3 * factor(step), rel=1e-6), step

    ckpt = torch.load(last_of(logs), weights_only=True)
    (group,) = ckpt["optimizer_states"][0]["param_groups"]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.3 * factor(6), 0.1, 0.5)
    assert ckpt["lr_schedulers"][0]["base_lrs"] == [0.3]
    hp, dm = ckpt["hyper_parameters"], ckpt["datamodule_hyper_parameters"]
    assert (hp["lr"], hp["momentum"], hp["weight_decay"], hp["label_smoothing"]) == (0.3, 0.1, 0.5, 0.2)
    assert (dm["batch_size"], dm["augment"]) == (16, "none")
    settings = metrics_of(run)["settings"]
    assert {k: settings[k] for k in ("lr", "momentum", "weight_decay", "batch_size", "augment", "label_smoothing")} \
        == {"lr": 0.3, "momentum": 0.1, "weight_decay": 0.5, "batch_size": 16, "augment": "none",
            "label_smoothing": 0.2}


@pytest.mark.parametrize("flags, needles", [
    (["--batch-size", "16"], ["--batch-size 16 (recorded: 32)", "inside epoch 1"]),
    (["--devices", "2", "--strategy", "ddp"], ["--devices 2 (recorded: ", "inside epoch 1"]),
    (["--optimizer", "adam"], ["--optimizer adam (recorded: sgd)"]),
    (["--val-size", "40", "--seed", "4"], ["--val-size 40", "--seed 4"]),
])
def test_a_resume_that_cannot_continue_the_run_is_refused_before_anything_runs(flags, needles, stopped_logdir,
                                                                               tiny_archive, tmp_path, capsys):
    logs = copy_of(stopped_logdir, tmp_path)
    before = last_of(logs).read_bytes()
    code = main(mlp_args(tiny_archive, stopped_logdir[1], logs, "--max-epochs", "2", "--ckpt-path", "last", *flags))
    assert_one_paragraph(code, capsys.readouterr().err, *needles, "Nothing was run")
    assert last_of(logs).read_bytes() == before and not (run_of(logs) / "metrics.json").exists()


def test_the_learning_rate_may_change_inside_an_epoch(stopped_logdir, tiny_archive, tmp_path):
    logs = copy_of(stopped_logdir, tmp_path)
    seen = FirstStep()
    assert main(mlp_args(tiny_archive, stopped_logdir[1], logs, "--max-epochs", "2", "--ckpt-path", "last",
                         "--lr", "0.05", "--schedule", "none"), callbacks=[seen]) == 0
    assert seen.step == 5 and seen.groups[0]["lr"] == 0.05  # from a schedule to none: the new constant rate
    assert metrics_of(run_of(logs))["epochs"] == 2


# --- which run is resumed ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_the_printed_command_and_last_resume_the_run_that_stopped_and_never_a_finished_one(
        stopped_logdir, tiny_archive, tmp_path, capsys):
    logs, data = copy_of(stopped_logdir, tmp_path), stopped_logdir[1]
    code = main(mlp_args(tiny_archive, data, logs, "--max-epochs", "2", "--ckpt-path", "last"),
                callbacks=[SignalAt("after_forward", 1, 2, signal.SIGTERM)])
    err = capsys.readouterr().err
    assert code == 143 and f"resuming the unfinished run {run_of(logs)}" in err
    printed = [line for line in err.splitlines() if line.startswith("Resume with: ")][-1]
    assert main(mlp_args(tiny_archive, data, logs, "--max-epochs", "1")) == 0  # run B finishes in the same logdir
    finished_b = (run_of(logs, 1) / "metrics.json").read_bytes()

    argv = shlex.split(printed.removeprefix("Resume with: "))
    assert argv[:3] == ["python", "-m", "cifar10.fit"] and str(last_of(logs)) in argv
    assert main(argv[3:]) == 0
    assert metrics_of(run_of(logs))["status"] == "finished" and metrics_of(run_of(logs))["epochs"] == 2
    assert (run_of(logs, 1) / "metrics.json").read_bytes() == finished_b, "run B is left alone"

    (run_of(logs, 2)).mkdir()  # a run killed before its first checkpoint: an events file, nothing to resume
    (run_of(logs, 2) / "events.out.tfevents.0.host").write_bytes(b"")
    code = main(mlp_args(tiny_archive, data, logs, "--max-epochs", "1", "--ckpt-path", "last"))
    assert_one_paragraph(code, capsys.readouterr().err, "no unfinished run", f"--ckpt-path {last_of(logs, 1)}")
    assert (run_of(logs, 1) / "metrics.json").read_bytes() == finished_b, "a finished run is never re-tested"

    code = main(mlp_args(tiny_archive, data, logs, "--max-epochs", "1", "--ckpt-path", str(last_of(logs, 1))))
    assert_one_paragraph(code, capsys.readouterr().err, "finished run", "above 1", "cifar10.evaluate")
    assert (run_of(logs, 1) / "metrics.json").read_bytes() == finished_b


def test_last_refuses_to_choose_between_two_unfinished_runs(stopped_logdir, tiny_archive, tmp_path, capsys):
    logs = copy_of(stopped_logdir, tmp_path)
    shutil.copytree(run_of(logs), run_of(logs, 1))
    code = main(mlp_args(tiny_archive, stopped_logdir[1], logs, "--max-epochs", "2", "--ckpt-path", "last"))
    assert_one_paragraph(code, capsys.readouterr().err, "ambiguous", str(last_of(logs, 0)), str(last_of(logs, 1)))


# --- what a checkpoint may not decide ---------------------------------------------------------------------

def test_a_checkpoint_chooses_no_paths_urls_or_checksums(stopped_logdir, tiny_archive, tmp_path, monkeypatch,
                                                         capsys):
    ckpt = torch.load(last_of(stopped_logdir[0]), weights_only=True)
    ckpt["callbacks"]["RunRecord"]["logdir"] = str(tmp_path / "their_logs")
    ckpt["datamodule_hyper_parameters"] |= {"data_dir": str(tmp_path / "their_data"),
                                            "url": "file:///nowhere/their.tar.gz", "md5": "0" * 32}
    received = tmp_path / "inbox" / "that.ckpt"
    received.parent.mkdir()
    torch.save(ckpt, received)
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    data = stopped_logdir[1]
    code = main(["--ckpt-path", str(received), "--data-dir", str(data), "--data-url", tiny_archive.url,
                 "--data-md5", tiny_archive.md5, "--max-epochs", "2"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert not (tmp_path / "their_logs").exists() and not (tmp_path / "their_data").exists()
    assert f"--data-dir {tmp_path / 'their_data'} (used: {data})" in err and "their.tar.gz" in err
    settings = metrics_of(here / "lightning_logs" / "mlp" / "version_0")["settings"]
    assert (settings["logdir"], settings["data_dir"], settings["data_md5"]) == ("lightning_logs", str(data),
                                                                                 tiny_archive.md5)


@pytest.mark.slow
def test_a_moved_logdir_resumes_and_finishes(stopped_logdir, tiny_archive, tmp_path):
    original = copy_of(stopped_logdir, tmp_path)
    moved = tmp_path / "moved"
    shutil.copytree(original, moved, symlinks=True)  # cp -a X M; rm -rf X
    shutil.rmtree(original)
    assert main(mlp_args(tiny_archive, stopped_logdir[1], moved, "--max-epochs", "2", "--ckpt-path", "last")) == 0
    metrics = metrics_of(run_of(moved))
    assert metrics["status"] == "finished" and metrics["tested"] == str(run_of(moved) / "checkpoints" / "best.ckpt")
    assert not original.exists()
    state = torch.load(last_of(moved), weights_only=True)["callbacks"]
    saved_paths = [v for key, cb in state.items() if "Checkpoint" in key for k, v in cb.items() if k.endswith("_path")]
    assert saved_paths and all(not Path(p).is_absolute() for p in saved_paths), saved_paths


# --- one fit at a time in a run folder --------------------------------------------------------------------

HOLDER = """
import sys
from pathlib import Path
from cifar10.runs.lock import acquire
acquire(Path(sys.argv[1]))
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_run_folder_being_trained_is_refused_and_a_stale_lock_taken_over(stopped_logdir, tiny_archive, tmp_path,
                                                                          capsys):
    logs = copy_of(stopped_logdir, tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_of(logs))], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        resume = mlp_args(tiny_archive, stopped_logdir[1], logs, "--max-epochs", "2", "--ckpt-path")
        code = main([*resume, str(last_of(logs))])
        assert_one_paragraph(code, capsys.readouterr().err, "being trained by another fit", f"pid {holder.pid}")
        code = main([*resume, "last"])
        assert_one_paragraph(code, capsys.readouterr().err, "no unfinished run", "being trained right now")
    finally:
        holder.kill()  # SIGKILL: its lock file stays behind, stale
        holder.wait()
    assert (run_of(logs) / LOCK_NAME).read_text().strip() == str(holder.pid)
    assert main([*resume, "last"]) == 0
    assert f"took over the lock of process {holder.pid}" in capsys.readouterr().err
    assert metrics_of(run_of(logs))["status"] == "finished" and not (run_of(logs) / LOCK_NAME).exists()


def test_checkpoint_state_names_files_in_its_own_folder_only(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    from cifar10.callbacks import RunCheckpoint

    here = tmp_path / "run" / "checkpoints"
    here.mkdir(parents=True)
    (here / "best.ckpt").write_bytes(b"")
    kwargs = {"dirpath": here, "filename": "best", "monitor": "val/acc", "mode": "max"}
    assert RunCheckpoint(**kwargs).state_key == ModelCheckpoint(**kwargs).state_key  # older checkpoints resume
    score = torch.tensor(0.5)
    elsewhere = {"monitor": "val/acc", "best_model_score": score, "current_score": score, "kth_value": score,
                 "dirpath": "/old/place/checkpoints", "best_model_path": "/old/place/checkpoints/best.ckpt",
                 "kth_best_model_path": "/old/place/checkpoints/best.ckpt", "last_model_path": "../../../etc/passwd",
                 "best_k_models": {"/old/place/checkpoints/best.ckpt": score}}
    moved = RunCheckpoint(**kwargs)
    moved.load_state_dict(elsewhere)  # an older, absolute state of a folder that moved
    assert moved.best_model_path == str(here / "best.ckpt") and moved.best_model_score == score
    assert moved.best_k_models == {str(here / "best.ckpt"): score} and moved.last_model_path == ""
    (here / "best.ckpt").unlink()  # resumed outside its run folder: nothing here to compare new scores with
    fresh = RunCheckpoint(**kwargs)
    fresh.load_state_dict(elsewhere)
    assert fresh.best_model_path == "" and fresh.best_model_score is None and fresh.best_k_models == {}
