"""`python -m cifar10.evaluate` on the tiny archive: every file written, numbers equal a direct computation."""

import dataclasses
import json
import shutil

import pytest
import torch
from helpers_ckpt import read_test_split, tiny_run  # noqa: F401 (tiny_run is a fixture)
from PIL import Image

from cifar10.checkpoint import load_checkpoint
from cifar10.evaluate import main

FILES = ["confusion_matrix.png", "per_class_accuracy.png", "misclassified.png", "curves.png", "report.json"]


def evaluate_args(run, archive, *extra: str) -> list[str]:
    return ["--ckpt", str(run.ckpt), "--data-dir", str(run.data_dir), "--data-url", archive.url,
            "--data-md5", archive.md5, "--batch-size", "32", "--accelerator", "cpu", *extra]


@torch.no_grad()
def direct_numbers(run, archive, tta: str) -> dict:
    """Accuracy, per-class accuracy and confusion computed by hand from the model's logits."""
    model, meta = load_checkpoint(run.ckpt)
    images, labels = read_test_split(archive, run)
    logits = (model(images) + model(torch.flip(images, dims=[3]))) / 2 if tta == "flip" else model(images)
    preds = logits.argmax(1)
    confusion = torch.bincount(labels * 10 + preds, minlength=100).view(10, 10)
    return {"test_acc": (preds == labels).float().mean().item(),
            "per_class_acc": dict(zip(meta.class_names, (confusion.diag() / confusion.sum(1)).tolist())),
            "confusion": confusion.tolist(), "n_images": len(labels)}


def assert_report_matches(report: dict, expected: dict) -> None:
    assert report["n_images"] == expected["n_images"]
    assert report["confusion"] == expected["confusion"]
    assert report["test_acc"] == pytest.approx(expected["test_acc"], abs=1e-6)
    assert report["per_class_acc"] == pytest.approx(expected["per_class_acc"], abs=1e-6)


@pytest.mark.parametrize("flag, tta", [([], "none"), (["--tta"], "flip")])
def test_report_files_and_numbers(tiny_run, tiny_archive, tmp_path, capsys, flag, tta):
    out = tmp_path / "report"
    assert main(evaluate_args(tiny_run, tiny_archive, "--out", str(out), *flag)) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    for png in FILES[:-1]:
        assert Image.open(out / png).size[0] > 100
    report = json.loads((out / "report.json").read_text())
    assert report["tta"] == tta and report["model"] == "lenet"
    assert_report_matches(report, direct_numbers(tiny_run, tiny_archive, tta))
    printed = capsys.readouterr()
    assert f"test accuracy: {report['test_acc']:.2%} on 100 images" in printed.out
    assert "true \\ predicted" in printed.out and "automobile" in printed.out
    assert "Testing DataLoader 0: 100%" in printed.err  # the progress bar over the test batches, not on stdout
    assert "Testing" not in printed.out


def test_without_tta_flag_the_checkpoints_own_mode_is_used(tiny_run, tiny_archive, tmp_path):
    ckpt = torch.load(tiny_run.ckpt, weights_only=True)
    ckpt["hyper_parameters"]["tta"] = "flip"  # as a recipe with test-time augmentation saves it
    flip_ckpt = tmp_path / "flip.ckpt"
    torch.save(ckpt, flip_ckpt)
    run = dataclasses.replace(tiny_run, ckpt=flip_ckpt)
    assert main(evaluate_args(run, tiny_archive, "--out", str(tmp_path / "r"))) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["tta"] == "flip"
    assert_report_matches(report, direct_numbers(tiny_run, tiny_archive, "flip"))


def test_default_out_is_report_beside_the_checkpoint(tiny_run, tiny_archive, tmp_path):
    run_dir = tmp_path / "lenet" / "version_3"
    (run_dir / "checkpoints").mkdir(parents=True)
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    shutil.copy(tiny_run.ckpt, ckpt)
    for events in tiny_run.run_dir.glob("events.out.tfevents.*"):
        shutil.copy(events, run_dir)
    args = evaluate_args(tiny_run, tiny_archive)
    args[1] = str(ckpt)
    assert main(args) == 0
    assert sorted(p.name for p in (run_dir / "checkpoints" / "report").iterdir()) == sorted(FILES)


def test_missing_tensorboard_logs_skip_curves_with_a_note(tiny_run, tiny_archive, tmp_path, capsys):
    ckpt = tmp_path / "loose.ckpt"
    shutil.copy(tiny_run.ckpt, ckpt)
    args = evaluate_args(tiny_run, tiny_archive, "--out", str(tmp_path / "out"))
    args[1] = str(ckpt)
    assert main(args) == 0
    assert "curves.png skipped" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(set(FILES) - {"curves.png"})
    assert json.loads((tmp_path / "out" / "report.json").read_text())["figures"] == [
        "confusion_matrix.png", "per_class_accuracy.png", "misclassified.png"]


def test_bad_checkpoint_and_batch_size_exit_2(tiny_run, tiny_archive, tmp_path, capsys):
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    args = evaluate_args(tiny_run, tiny_archive)
    args[1] = str(tmp_path / "junk.ckpt")
    assert main(args) == 2
    assert main(evaluate_args(tiny_run, tiny_archive, "--batch-size", "0")) == 2
    err = capsys.readouterr().err
    assert "is not a checkpoint of this project" in err and "--batch-size must be at least 1" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_gpu_asked_for_without_cuda_is_a_clear_error(tiny_run, tiny_archive, tmp_path, capsys):
    args = evaluate_args(tiny_run, tiny_archive, "--out", str(tmp_path / "r"))
    args[args.index("cpu")] = "gpu"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--accelerator gpu needs CUDA" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()  # refused before anything was written


@pytest.mark.slow
def test_evaluate_tests_in_the_precision_fit_tested_in(tiny_archive, tmp_path):
    """A bf16-mixed run: evaluate's accuracy is fit's own test accuracy, bit for bit (32-bit would differ)."""
    from cifar10.fit import main as fit_main

    logs, data = tmp_path / "logs", tmp_path / "data"
    assert fit_main(["--model", "mlp", "--data-url", tiny_archive.url, "--data-md5", tiny_archive.md5,
                     "--data-dir", str(data), "--val-size", "0", "--max-epochs", "1", "--batch-size", "32",
                     "--accelerator", "cpu", "--precision", "bf16-mixed", "--logdir", str(logs)]) == 0
    run = logs / "mlp" / "version_0"
    metrics = json.loads((run / "metrics.json").read_text())
    out = tmp_path / "report"
    assert main(["--ckpt", str(run / "checkpoints" / "last.ckpt"), "--data-dir", str(data), "--data-url",
                 tiny_archive.url, "--data-md5", tiny_archive.md5, "--accelerator", "cpu", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["precision"] == "bf16-mixed" and report["test_acc"] == metrics["test_acc"]


def test_without_data_dir_the_checkpoints_own_data_folder_is_read(tiny_run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no ./data here: it would be downloaded from the official URL
    assert main(["--ckpt", str(tiny_run.ckpt), "--out", str(tmp_path / "report")]) == 0
    out, err = capsys.readouterr()
    assert f"data: {tiny_run.data_dir} (the checkpoint's training data" in err and "test accuracy" in out
    assert not (tmp_path / "data").exists()


def test_a_failed_evaluation_leaves_no_empty_report_folder(tiny_run, tmp_path, monkeypatch, capsys):
    ckpt = torch.load(tiny_run.ckpt, weights_only=True)
    ckpt["datamodule_hyper_parameters"]["data_dir"] = str(tmp_path / "gone")  # moved away since training
    copied = tmp_path / "run" / "best.ckpt"
    copied.parent.mkdir()
    torch.save(ckpt, copied)
    monkeypatch.chdir(tmp_path)
    code = main(["--ckpt", str(copied), "--data-url", (tmp_path / "nowhere.tar.gz").as_uri()])
    assert code == 2 and "Could not download" in capsys.readouterr().err
    assert not (tmp_path / "run" / "report").exists() and not (tmp_path / "gone").exists()
