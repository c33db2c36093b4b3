"""`python -m cifar10.runs` (cifar10.runs.table): the runs table, on fake run folders and one real run."""

import csv
import io
import json
import math
import os
from pathlib import Path

import pytest

from cifar10.runs.table import main, mean_std

from test_fit import tiny_fit_args


def fake_metrics(model: str = "lenet", seed: int = 0, test_acc: float = 0.8, **changes) -> dict:
    """metrics.json as cifar10.fit writes it (its key set), with `changes` applied; `settings` merges."""
    settings = {"model": model, "recipe": "default", "seed": seed, "lr": 0.01, "batch_size": 128,
                "max_epochs": 3, "tta": "none", "precision": "32", "logdir": "lightning_logs", "data_dir": "data"}
    settings |= changes.pop("settings", {})
    metrics = {
        "model": model, "params": 62006, "epochs": 3, "wall_time_s": 130.0, "train_images_per_s": 1500.0,
        "train_time_s": 100.0, "best_val_acc": test_acc + 0.01, "test_acc": test_acc,
        "per_class_acc": {"airplane": test_acc, "cat": test_acc}, "recipe": settings["recipe"], "seed": seed,
        "precision": "32", "device": "cpu x1 (cpu, 2 threads)", "best_ckpt": "x/checkpoints/best.ckpt",
        "tested": "x/checkpoints/best.ckpt", "resumed_from": None, "status": "finished",
        "settings": settings,
    }
    return metrics | changes


def write_run(run_dir: Path, metrics: dict | str | None = None, last_ckpt: bool = False) -> Path:
    run_dir.mkdir(parents=True)
    if isinstance(metrics, dict):
        metrics = json.dumps(metrics, indent=2) + "\n"
    if metrics is not None:
        (run_dir / "metrics.json").write_text(metrics)
    if last_ckpt:
        (run_dir / "checkpoints").mkdir()
        (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"not really a checkpoint")
    return run_dir


@pytest.fixture
def logs(tmp_path) -> Path:
    """lenet seeds 0 and 1, a speedrun with TTA one level deeper, an unfinished, an empty and a broken run."""
    root = tmp_path / "logs"
    write_run(root / "lenet" / "version_0", fake_metrics(seed=0, test_acc=0.80, train_time_s=120.0))
    write_run(root / "lenet" / "version_1", fake_metrics(seed=1, test_acc=0.90, train_time_s=100.0))
    write_run(root / "real" / "default" / "speedrun" / "version_0",
              fake_metrics("speedrun", test_acc=0.93, train_images_per_s=5000.0,
                           settings={"tta": "flip-shift", "recipe": "default"}))
    write_run(root / "lenet" / "version_2", last_ckpt=True)
    write_run(root / "lenet" / "version_3")
    write_run(root / "mlp" / "version_0", "{not json")
    return root


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def as_json(capsys, *argv) -> list[dict]:
    code, out, _ = run(capsys, *argv, "--format", "json")
    assert code == 0
    return json.loads(out)


def line_of(out: str, fragment: str) -> str:
    [line] = [line for line in out.splitlines() if fragment in line]
    return line


def test_table_lists_every_run_with_its_status_and_one_line_for_a_broken_one(logs, capsys):
    code, out, err = run(capsys, logs)
    assert code == 0
    header = out.splitlines()[0].split()
    assert header[:3] == ["model", "recipe", "seed"] and "tta" in header and header[-2:] == ["run", "folder"]
    lenet0 = line_of(out, str(logs / "lenet" / "version_0"))
    assert lenet0.split()[:4] == ["lenet", "default", "0", "3"]
    assert "80.00%" in lenet0 and "81.00%" in lenet0 and "120.0" in lenet0 and "1,500" in lenet0
    assert "finished" in lenet0
    speedrun = line_of(out, "speedrun")
    assert "flip-shift" in speedrun and "93.00%" in speedrun and "5,000" in speedrun
    assert str(logs / "real" / "default" / "speedrun" / "version_0") in speedrun
    assert line_of(out, "version_2").split()[0] == "lenet" and "unfinished" in line_of(out, "version_2")
    assert "empty" in line_of(out, "version_3")
    assert "mlp" not in out
    assert err.count("\n") == 1 and str(logs / "mlp" / "version_0") in err and "not valid JSON" in err


def test_csv_and_json_hold_fractions_and_every_run(logs, capsys):
    code, out, _ = run(capsys, logs, "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["run_dir"] for r in rows] == [str(logs / p) for p in (
        "lenet/version_0", "lenet/version_1", "lenet/version_2", "lenet/version_3",
        "real/default/speedrun/version_0")]
    assert float(rows[0]["test_acc"]) == 0.80 and float(rows[0]["best_val_acc"]) == pytest.approx(0.81)
    assert rows[0]["seed"] == "0" and rows[0]["tta"] == "none" and rows[4]["tta"] == "flip-shift"
    assert rows[2]["status"] == "unfinished" and rows[2]["test_acc"] == "" and rows[2]["model"] == "lenet"

    records = as_json(capsys, logs)
    assert records[0] == {
        "model": "lenet", "recipe": "default", "seed": 0, "epochs": 3, "precision": "32",
        "device": "cpu x1 (cpu, 2 threads)", "train_time_s": 120.0, "train_images_per_s": 1500.0,
        "best_val_acc": pytest.approx(0.81), "test_acc": 0.80, "tta": "none", "status": "finished",
        "run_dir": str(logs / "lenet" / "version_0")}
    assert records[3]["status"] == "empty" and records[3]["test_acc"] is None


def test_markdown_is_a_pipe_table_with_percentages(logs, capsys):
    code, out, _ = run(capsys, logs, "--format", "markdown", "--model", "lenet")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("| model | recipe | seed |") and lines[0].endswith("| run folder |")
    assert set(lines[1]) <= set("|-: ") and "---:" in lines[1]
    assert len(lines) == 2 + 4 and all(line.startswith("| lenet |") for line in lines[2:])
    assert "| 80.00% |" in lines[2] and "| - |" in lines[4]


def test_sort_puts_best_accuracy_first_and_unknown_last(logs, capsys):
    order = [r["run_dir"][len(str(logs)) + 1:] for r in as_json(capsys, logs, "--sort", "test_acc")]
    assert order[:3] == ["real/default/speedrun/version_0", "lenet/version_1", "lenet/version_0"]
    assert set(order[3:]) == {"lenet/version_2", "lenet/version_3"}
    fastest = as_json(capsys, logs, "--sort", "train_time_s", "--model", "lenet")
    assert [r["seed"] for r in fastest[:2]] == [1, 0]  # shortest training first


def test_run_folders_sort_by_version_number(tmp_path, capsys):
    for n in (10, 2, 1):
        write_run(tmp_path / "lenet" / f"version_{n}", fake_metrics(seed=n))
    assert [r["seed"] for r in as_json(capsys, tmp_path)] == [1, 2, 10]
    assert [r["seed"] for r in as_json(capsys, tmp_path, "--sort", "run_dir")] == [1, 2, 10]


def test_model_filter_repeats_and_says_when_nothing_matches(logs, capsys):
    assert {r["model"] for r in as_json(capsys, logs, "--model", "speedrun")} == {"speedrun"}
    assert len(as_json(capsys, logs, "--model", "speedrun", "--model", "lenet")) == 5
    code, out, err = run(capsys, logs, "--model", "resnet18", "--format", "json")
    assert code == 0 and json.loads(out) == [] and "no runs of resnet18" in err and "lenet" in err


def test_group_folds_seeds_into_mean_and_sample_std(logs, capsys):
    groups = as_json(capsys, logs, "--group", "--model", "lenet")
    finished = [g for g in groups if g["status"] == "finished"]
    assert len(finished) == 1
    lenet = finished[0]
    assert lenet["runs"] == 2 and lenet["seeds"] == [0, 1]
    assert lenet["test_acc_mean"] == pytest.approx(0.85)
    assert lenet["test_acc_std"] == pytest.approx(0.0707107, abs=1e-6)  # sample std: sqrt(0.005 / 1)
    assert lenet["train_time_s_mean"] == 110.0 and lenet["train_time_s_std"] == pytest.approx(math.sqrt(200))
    assert lenet["train_images_per_s_std"] == 0.0
    assert {(g["status"], g["runs"]) for g in groups} == {("finished", 2), ("unfinished", 1), ("empty", 1)}

    code, out, _ = run(capsys, logs, "--group")
    assert code == 0
    [row] = [line for line in out.splitlines() if line.startswith("lenet") and "finished" in line.split()]
    assert "85.00%" in row and "7.07%" in row
    speedrun = line_of(out, "speedrun")
    assert "93.00%" in speedrun and speedrun.split().count("-") >= 4  # a single run has no std


def test_group_keeps_runs_with_other_settings_apart_and_says_how_they_differ(tmp_path, capsys):
    write_run(tmp_path / "lenet" / "version_0", fake_metrics(seed=0, test_acc=0.80))
    write_run(tmp_path / "lenet" / "version_1", fake_metrics(seed=1, test_acc=0.82))
    write_run(tmp_path / "lenet" / "version_2", fake_metrics(seed=0, test_acc=0.70, settings={"lr": 0.1}))
    groups = as_json(capsys, tmp_path, "--group", "--sort", "test_acc")
    assert [(g["runs"], g["differs"]) for g in groups] == [(2, "lr=0.01"), (1, "lr=0.1")]
    assert groups[1]["test_acc_std"] is None
    code, out, _ = run(capsys, tmp_path, "--group", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows[0]["seeds"] == "0 1" and rows[1]["test_acc_std"] == "" and float(rows[0]["test_acc_mean"]) == 0.81
    _, out, _ = run(capsys, tmp_path, "--group")
    assert "differs in" in out.splitlines()[0] and "lr=0.1" in out


def test_mean_std_of_one_value_has_no_std():
    assert mean_std([0.8]) == (0.8, None) and mean_std([None, None]) == (None, None)
    mean, std = mean_std([0.8, None, 0.9])
    assert mean == pytest.approx(0.85) and std == pytest.approx(0.070710678)


def test_a_missing_logdir_gets_one_line_the_others_still_print_and_exit_is_2(logs, tmp_path, capsys):
    code, out, err = run(capsys, tmp_path / "nowhere", logs)
    assert code == 2
    assert "speedrun" in out and str(logs / "lenet" / "version_0") in out
    missing = [line for line in err.splitlines() if "nowhere" in line]
    assert len(missing) == 1 and missing[0].startswith("error:")
    code, out, err = run(capsys, tmp_path / "nowhere")
    assert code == 2 and out == "" and err.count("\n") == 1


def test_metrics_that_are_not_a_runs_are_skipped_with_a_reason(tmp_path, capsys):
    write_run(tmp_path / "a" / "version_0", "[1, 2]")
    write_run(tmp_path / "b" / "version_0", fake_metrics() | {"test_acc": "high"})
    write_run(tmp_path / "c" / "version_0", fake_metrics(status="interrupted"))
    older = fake_metrics()
    del older["status"]  # written before metrics.json had a status
    write_run(tmp_path / "d" / "version_0", older)
    code, out, err = run(capsys, tmp_path, "--format", "json")
    assert code == 0
    assert [r["status"] for r in json.loads(out)] == ["interrupted", "finished"]
    lines = err.splitlines()
    assert len(lines) == 2 and "holds a list" in lines[0] and "'test_acc' is 'high'" in lines[1]


def test_a_failed_run_shows_what_its_settings_tell(tmp_path, capsys):
    settings = fake_metrics(seed=4)["settings"]  # what fit writes when the loss turns non-finite
    write_run(tmp_path / "lenet" / "version_0",
              {"model": "lenet", "status": "failed", "error": "loss is nan", "settings": settings})
    [record] = as_json(capsys, tmp_path)
    assert record["status"] == "failed" and record["test_acc"] is None
    assert (record["recipe"], record["seed"], record["precision"], record["tta"]) == ("default", 4, "32", "none")


def test_a_run_folder_itself_can_be_the_logdir(logs, capsys):
    [record] = as_json(capsys, logs / "lenet" / "version_1")
    assert record["seed"] == 1


def test_an_empty_logdir_says_so(tmp_path, capsys):
    code, out, err = run(capsys, tmp_path, "--format", "json")
    assert code == 0 and json.loads(out) == [] and "no run folders" in err


def test_bad_sort_and_format_exit_2(logs, capsys):
    for argv, words in ((["--group", "--sort", "seed"], "does not apply with --group"),
                        (["--sort", "runs"], "needs --group"),
                        (["--format", "html"], "--help")):
        code, _, err = run(capsys, logs, *argv)
        assert code == 2 and words in err, err


def test_help_explains_each_option(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m cifar10.runs")
    for words in ("--model NAME", "--sort COLUMN", "--format", "--group", "sample", "Exit status", "unfinished"):
        assert words in out


@pytest.mark.slow
def test_lists_a_real_run_with_the_test_accuracy_of_its_metrics(tiny_archive, tmp_path, capsys):
    from cifar10.fit import main as fit_main

    assert fit_main(tiny_fit_args(tiny_archive, tmp_path, "--max-epochs", "1")) == 0
    run_dir = tmp_path / "logs" / "lenet" / "version_0"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    capsys.readouterr()
    [record] = as_json(capsys, tmp_path / "logs")
    assert record["test_acc"] == metrics["test_acc"] and record["run_dir"] == str(run_dir)
    assert record["model"] == "lenet" and record["epochs"] == 1 and record["status"] == "finished"
    code, out, _ = run(capsys, tmp_path / "logs")
    assert code == 0 and f"{100 * metrics['test_acc']:.2f}%" in line_of(out, "version_0")


def test_a_bad_metrics_file_is_skipped_with_one_line_and_the_others_are_listed(tmp_path, capsys):
    """NaN and 1e400 (inf) where numbers go, a nesting deeper than the recursion limit, a FIFO (it used to block
    forever) and a symlink to /dev/zero (it used to be read until memory ran out): each one line; the good run listed."""
    write_run(tmp_path / "good" / "version_0", fake_metrics())
    write_run(tmp_path / "nan" / "version_0", json.dumps(fake_metrics() | {"epochs": float("nan")}))
    write_run(tmp_path / "huge" / "version_0", json.dumps(fake_metrics()).replace('"epochs": 3,', '"epochs": 1e400,'))
    write_run(tmp_path / "deep" / "version_0", "[" * 100_000 + "]" * 100_000)
    write_run(tmp_path / "fifo" / "version_0")
    os.mkfifo(tmp_path / "fifo" / "version_0" / "metrics.json")
    write_run(tmp_path / "zero" / "version_0")
    (tmp_path / "zero" / "version_0" / "metrics.json").symlink_to("/dev/zero")
    write_run(tmp_path / "big" / "version_0", " " * (2 << 20) + json.dumps(fake_metrics()))
    code, out, err = run(capsys, tmp_path, "--format", "json")
    assert code == 0 and [r["run_dir"] for r in json.loads(out)] == [str(tmp_path / "good" / "version_0")]
    lines = dict(line.split(": ", 1) for line in err.splitlines())
    assert len(lines) == 6, err
    why = {Path(key.removeprefix("skipped ")).parent.name: text for key, text in lines.items()}
    assert "'epochs' is nan, not a finite number" in why["nan"] and "'epochs' is inf" in why["huge"]
    assert "nested too deeply" in why["deep"] and "not a regular file" in why["fifo"]
    assert "not a regular file" in why["zero"] and "larger than" in why["big"]
