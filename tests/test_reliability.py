"""Nothing lost whatever happens: atomic writes (kills, full disks, other filesystems), concurrent runs,
non-finite losses, invalid values, damaged checkpoints, files that are not files."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers_ckpt import tiny_run  # noqa: F401 (a fixture)

from cifar10 import files, runs
from cifar10.fit import main
from cifar10.files import atomic_write

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


def fit_args(archive, tmp_path: Path, *extra: str) -> list[str]:
    return ["--data-url", archive.url, "--data-md5", archive.md5, "--data-dir", str(tmp_path / "data"),
            "--model", "lenet", "--max-epochs", "1", "--val-size", "50", "--batch-size", "32",
            "--accelerator", "cpu", "--logdir", str(tmp_path / "logs"), *extra]


def assert_one_paragraph(code: int, err: str, *needles: str) -> str:
    assert code == 2 and "Traceback" not in err, err
    message = err.strip().splitlines()[-1]
    assert message.startswith("error: "), err
    for needle in needles:
        assert needle in message, message
    return message


@pytest.fixture
def tmpfs(tmp_path):
    """A small filesystem of its own (another device than $TMPDIR), unmounted afterwards."""
    mounted = []

    def mount(size: str) -> Path:
        folder = tmp_path / f"tmpfs{len(mounted)}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


# --- atomic writes ---------------------------------------------------------------------------------

def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    atomic_write(target, b"old")

    def fail(fd):
        raise KeyboardInterrupt  # e.g. Ctrl-C at the worst moment

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, b"new" * 1000)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["last.ckpt"]


def test_written_files_get_an_ordinary_files_mode(tmp_path):
    target = atomic_write(tmp_path / "metrics.json", b"{}")
    plain = tmp_path / "plain.json"
    plain.write_bytes(b"{}")
    assert target.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777  # not mkstemp's 0600


WRITER = """
import sys, itertools
from cifar10.files import atomic_write
target = sys.argv[1]
for i in itertools.count():
    atomic_write(target, bytes([i % 256]) * (8 << 20))
    print(i, flush=True)
"""


@needs_root
@pytest.mark.slow
def test_sigkill_during_writes_on_another_filesystem_never_damages_the_file(tmpfs, tmp_path):
    """A writer replacing an 8 MB file in a loop on a tmpfs, killed at random moments: the file is always whole."""
    folder = tmpfs("64m")
    target = folder / "last.ckpt"
    for attempt in range(5):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True)
        for _ in range(2 + attempt):
            writer.stdout.readline()  # some writes done
        time.sleep(0.003 * attempt)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        data = target.read_bytes()
        assert len(data) == 8 << 20 and data == data[:1] * len(data), "a whole file, old or new"
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("*.partial")), "nothing staged in $TMPDIR"


@needs_root
@pytest.mark.slow
def test_a_full_disk_is_one_paragraph_that_says_what_was_kept(tiny_archive, tmpfs, tmp_path, capsys):
    logdir = tmpfs("3m")  # a lenet checkpoint with Adam's state is about 6.5 MB
    code = main([*fit_args(tiny_archive, tmp_path), "--logdir", str(logdir)])
    message = assert_one_paragraph(code, capsys.readouterr().err, "no space left", "Free some space")
    assert "no last.ckpt was written" in message or "no best.ckpt was written" in message
    assert not list(logdir.rglob("*.partial")), "the temp file is removed"


def test_checkpoints_are_written_through_the_atomic_writer(tiny_archive, tmp_path, monkeypatch):
    written = []
    real = files.atomic_write
    monkeypatch.setattr(files, "atomic_write", lambda path, data: written.append(Path(path).name) or real(path, data))
    assert main(fit_args(tiny_archive, tmp_path)) == 0
    assert {"best.ckpt", "last.ckpt"} <= set(written)
    run_dir = tmp_path / "logs" / "lenet" / "version_0"
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "finished"


# --- concurrent runs ---------------------------------------------------------------------------------

def test_claimed_versions_are_distinct(tmp_path):
    claimed = [runs.claim_version(tmp_path, "lenet") for _ in range(3)]
    assert claimed == [0, 1, 2] and all((tmp_path / "lenet" / f"version_{v}").is_dir() for v in claimed)


@pytest.mark.slow
def test_two_fits_started_at_once_get_their_own_run_folders(tiny_archive, tmp_path):
    assert main([*fit_args(tiny_archive, tmp_path), "--max-epochs", "1"]) == 0  # data extracted once beforehand
    env = os.environ | {"CIFAR10_ALLOW_SUBSET": "1"}
    argv = [sys.executable, "-m", "cifar10.fit", *fit_args(tiny_archive, tmp_path, "--logdir", str(tmp_path / "both"))]
    fits = [subprocess.Popen([*argv, "--seed", str(seed)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True, env=env) for seed in (1, 2)]
    outputs = [fit.communicate(timeout=600)[0] for fit in fits]
    assert [fit.returncode for fit in fits] == [0, 0]
    folders = {line.split("run folder: ")[1].split()[0] for out in outputs for line in out.splitlines()
               if line.startswith("run folder: ")}
    assert len(folders) == 2
    seeds = {json.loads((Path(f) / "metrics.json").read_text())["seed"] for f in folders}
    assert seeds == {1, 2}


# --- bad values and runs that go wrong ----------------------------------------------------------------

@pytest.mark.parametrize("flags, needle", [
    (["--lr", "nan"], "--lr nan"), (["--lr", "inf"], "--lr inf"), (["--lr", "0"], "--lr 0"),
    (["--batch-size", "0"], "--batch-size 0"), (["--batch-size", "-1"], "--batch-size -1"),
    (["--max-epochs", "0"], "--max-epochs 0"), (["--label-smoothing", "1"], "--label-smoothing"),
    (["--weight-decay", "-1"], "--weight-decay"), (["--limit-train-batches", "0"], "--limit-train-batches"),
    (["--seed", "-1"], "--seed -1"), (["--val-size", "-5"], "--val-size -5"),
])
def test_invalid_values_are_rejected_before_any_folder_is_made(flags, needle, tiny_archive, tmp_path, capsys):
    code = main(fit_args(tiny_archive, tmp_path, *flags))
    assert_one_paragraph(code, capsys.readouterr().err, needle, "no run folder was made")
    assert not (tmp_path / "logs").exists() and not (tmp_path / "data").exists()


def test_a_loss_that_becomes_nan_stops_the_run_and_marks_it_failed(tiny_archive, tmp_path, capsys):
    code = main(fit_args(tiny_archive, tmp_path, "--lr", "1e30", "--schedule", "none"))
    assert_one_paragraph(code, capsys.readouterr().err, "training loss became", "Lower --lr", "status: failed")
    metrics = json.loads((tmp_path / "logs" / "lenet" / "version_0" / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "test_acc" not in metrics


def test_16_mixed_on_the_cpu_is_recorded_as_what_runs(tiny_archive, tmp_path, capsys):
    assert main(fit_args(tiny_archive, tmp_path, "--precision", "16-mixed", "--limit-train-batches", "2")) == 0
    metrics = json.loads((tmp_path / "logs" / "lenet" / "version_0" / "metrics.json").read_text())
    assert metrics["precision"] == "bf16-mixed" and "uses bf16-mixed" in capsys.readouterr().err


# --- damaged checkpoints ---------------------------------------------------------------------------

def test_a_damaged_last_checkpoint_names_the_newest_readable_one(tiny_archive, tmp_path, capsys):
    assert main(fit_args(tiny_archive, tmp_path, "--limit-train-batches", "2")) == 0
    checkpoints = tmp_path / "logs" / "lenet" / "version_0" / "checkpoints"
    (checkpoints.parent / "metrics.json").unlink()  # unfinished, as a run killed before its test
    last = checkpoints / "last.ckpt"
    last.write_bytes(last.read_bytes()[:100_000])  # cut short, as a kill mid-copy used to leave it
    code = main([*fit_args(tiny_archive, tmp_path), "--ckpt-path", "last"])
    assert_one_paragraph(code, capsys.readouterr().err, str(last), "cannot be read",
                         f"--ckpt-path {checkpoints / 'best.ckpt'}")


def test_a_checkpoint_whose_model_name_was_edited(tiny_archive, tmp_path, capsys):
    assert main(fit_args(tiny_archive, tmp_path, "--limit-train-batches", "2")) == 0
    ckpt = torch.load(tmp_path / "logs" / "lenet" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["cifar10"]["model"] = ckpt["hyper_parameters"]["model"] = "mlp"
    edited = tmp_path / "edited.ckpt"
    torch.save(ckpt, edited)
    code = main([*fit_args(tiny_archive, tmp_path), "--model", "mlp", "--ckpt-path", str(edited)])
    assert_one_paragraph(code, capsys.readouterr().err, "do not fit model 'mlp'", "edited")


def test_a_checkpoint_holding_code_is_refused_as_such(tmp_path, capsys):
    class Payload:
        def __reduce__(self):
            return os.system, ("touch " + str(tmp_path / "pwned"),)

    evil = tmp_path / "evil.ckpt"
    torch.save({"cifar10": {"model": "lenet"}, "state_dict": Payload()}, evil)
    code = main(["--ckpt-path", str(evil)])
    assert_one_paragraph(code, capsys.readouterr().err, "refused: it holds code", "nothing in it was executed")
    assert not (tmp_path / "pwned").exists()


# --- the other commands ------------------------------------------------------------------------------

def test_predict_reads_only_regular_files(tiny_run, tmp_path):  # noqa: F811 (tiny_run is a fixture)
    fifo = tmp_path / "photo.png"
    os.mkfifo(fifo)
    done = subprocess.run([sys.executable, "-m", "cifar10.predict", "--ckpt", str(tiny_run.ckpt), "--json", str(fifo)],
                          capture_output=True, text=True, timeout=120)  # it used to block forever on the FIFO
    assert done.returncode == 1 and "not a regular file" in json.loads(done.stdout)[0]["error"]


def test_export_to_a_folder_is_a_clear_error(tiny_run, tmp_path, capsys):  # noqa: F811
    from cifar10.export import main as export_main
    code = export_main(["--ckpt", str(tiny_run.ckpt), "--format", "torchscript", "--out", str(tmp_path)])
    assert_one_paragraph(code, capsys.readouterr().err, "is a folder", str(tmp_path / "model.ts"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_evaluate_checks_its_report_folder_before_the_test_pass(tiny_run, tmp_path, capsys):  # noqa: F811
    from cifar10.evaluate import main as evaluate_main
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code = evaluate_main(["--ckpt", str(tiny_run.ckpt), "--data-dir", str(tiny_run.data_dir), "--out",
                          str(locked / "report")])
    assert_one_paragraph(code, capsys.readouterr().err, "cannot write", "Nothing was done yet")


def test_evaluate_checks_its_report_folder_before_the_test_pass_as_root(tiny_run, tmp_path, capsys,  # noqa: F811
                                                                        monkeypatch):
    from cifar10 import evaluate
    blocker = tmp_path / "report"
    blocker.write_text("a file where the report folder should go")
    monkeypatch.setattr(evaluate, "evaluate", lambda *a, **k: pytest.fail("the test pass ran first"))
    code = evaluate.main(["--ckpt", str(tiny_run.ckpt), "--data-dir", str(tiny_run.data_dir), "--out", str(blocker)])
    assert_one_paragraph(code, capsys.readouterr().err, "cannot write", str(blocker))


def test_predict_with_an_edited_class_list_is_a_clear_error(tiny_run, tmp_path, capsys):  # noqa: F811
    from cifar10.predict import main as predict_main
    ckpt = torch.load(tiny_run.ckpt, weights_only=True)
    ckpt["hyper_parameters"]["class_names"] = ckpt["hyper_parameters"]["class_names"][:3]  # was an IndexError
    edited = tmp_path / "edited.ckpt"
    torch.save(ckpt, edited)
    image = tmp_path / "photo.png"
    from PIL import Image
    Image.new("RGB", (40, 30), "red").save(image)
    code = predict_main(["--ckpt", str(edited), str(image)])
    assert_one_paragraph(code, capsys.readouterr().err, "names 3 classes", "CIFAR-10 has 10")


# --- unwritable logdirs, and what a failed start leaves -----------------------------------------------------

@pytest.mark.parametrize("blocker", ["logs", "logs/lenet"])
def test_a_logdir_that_cannot_hold_run_folders_is_one_paragraph_before_anything_runs(blocker, tiny_archive, tmp_path,
                                                                                      capsys):
    (tmp_path / blocker).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / blocker).write_text("a file where a folder should go")
    code = main(fit_args(tiny_archive, tmp_path))
    assert_one_paragraph(code, capsys.readouterr().err, "cannot make a run folder", "--logdir", "Nothing was run")
    assert not (tmp_path / "data").exists(), "nothing ran: no download"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_logdir_is_one_paragraph(tiny_archive, tmp_path, capsys):
    (tmp_path / "logs").mkdir(mode=0o500)
    assert_one_paragraph(main(fit_args(tiny_archive, tmp_path)), capsys.readouterr().err, "cannot make a run folder")


def test_a_failed_start_leaves_no_empty_folders(tiny_archive, tmp_path, capsys):
    code = main(fit_args(tiny_archive, tmp_path, "--data-url", (tmp_path / "missing.tar.gz").as_uri()))
    assert_one_paragraph(code, capsys.readouterr().err, "Could not download")
    assert not (tmp_path / "logs").exists(), "no empty logs/lenet/version_0"
