"""`python -m cifar10.bench results`: a list of fits, one process each, as JSON lines and a table."""

import json
import os
import sys
from pathlib import Path

import pytest

from cifar10.bench import results
from cifar10.bench.__main__ import build_parser, main
from cifar10.models import model_info, model_names


def parse(*argv: str):
    return build_parser().parse_args(["results", *argv])


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


class FakeFit:
    """Stands in for the fit subprocess: writes a run folder with metrics.json and logs like fit does.

    Models in `fail` exit 1 after a traceback; `interrupt_at` (a 1-based run number) raises Ctrl-C there.
    """

    def __init__(self, fail=(), interrupt_at=None, silent=()):
        self.fail, self.interrupt_at, self.silent = set(fail), interrupt_at, set(silent)
        self.commands = []

    def __call__(self, command: list[str], log: Path) -> int:
        self.commands.append(command)
        if len(self.commands) == self.interrupt_at:
            raise KeyboardInterrupt
        model, seed = flag(command, "--model"), int(flag(command, "--seed"))
        with open(log, "a") as out:
            if model in self.fail:
                out.write("Epoch 0:  10%|#\rTraceback (most recent call last):\nRuntimeError: boom\n")
                return 1
            if model in self.silent:
                return 0
            run_dir = Path(flag(command, "--logdir")) / model / f"version_{seed}"
            run_dir.mkdir(parents=True)
            metrics = {"model": model, "recipe": flag(command, "--recipe"), "seed": seed, "epochs": 1,
                       "train_time_s": 2.5, "train_images_per_s": 1234.5, "test_acc": 0.5 + seed / 100,
                       "settings": {"tta": "flip" if model == "lenet" else "none"}}
            (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
            out.write(f"run folder: {run_dir}\nsummary\n\nrun folder: {run_dir}\n")
        return 0


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.strip().splitlines()]


def test_plan_runs_every_seed_of_each_model_in_order(tmp_path):
    args = parse("--models", "lenet", "mlp", "lenet", "--seeds", "0", "3", "--recipe", "tutorial",
                 "--data-dir", "d", "--logdir", str(tmp_path), "--accelerator", "cpu",
                 "--fit-args", "--max-epochs 1 --tta flip")
    planned = results.plan_runs(args)
    assert [(p.model, p.seed) for p in planned] == [("lenet", 0), ("lenet", 3), ("mlp", 0), ("mlp", 3)]
    first = planned[0]
    assert first.command[:3] == [sys.executable, "-m", "cifar10.fit"]
    assert first.command[3:] == ["--model", "lenet", "--recipe", "tutorial", "--seed", "0", "--data-dir", "d",
                                 "--logdir", str(tmp_path / "tutorial"), "--accelerator", "cpu",
                                 "--max-epochs", "1", "--tta", "flip"]
    assert first.log == tmp_path / "tutorial" / "lenet-seed0.log"
    assert [p.model for p in results.plan_runs(parse())] == model_names()  # default: all


def test_unknown_model_is_a_clear_error_listing_the_choices(capsys):
    assert main(["results", "--models", "lenet", "alexnet", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "'alexnet'" in err and all(name in err for name in model_names())


def test_fit_args_may_not_set_what_each_run_sets(capsys):
    assert main(["results", "--models", "lenet", "--fit-args=--seed=3", "--dry-run"]) == 2
    assert "--seed" in capsys.readouterr().err


def test_dry_run_prints_the_commands_and_runs_nothing(tmp_path, capsys, monkeypatch):
    fake = FakeFit()
    monkeypatch.setattr(results, "run_command", fake)
    assert main(["results", "--models", "mlp", "--seeds", "0", "1", "--logdir", str(tmp_path), "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all("-m cifar10.fit --model mlp" in line for line in lines)
    assert fake.commands == [] and not list(tmp_path.iterdir())


def test_a_failed_run_is_reported_and_the_others_still_run(tmp_path, capsys, monkeypatch):
    fake = FakeFit(fail={"mlp"})
    monkeypatch.setattr(results, "run_command", fake)
    out = tmp_path / "out" / "results.jsonl"
    assert main(["results", "--models", "mlp", "lenet", "--seeds", "0", "1", "--logdir", str(tmp_path / "logs"),
                 "--out", str(out)]) == 1
    captured = capsys.readouterr()
    lines = json_lines(captured.out)
    assert len(fake.commands) == 4 and len(lines) == 4
    log = tmp_path / "logs" / "default" / "mlp-seed0.log"
    assert lines[0] == {"model": "mlp", "recipe": "default", "seed": 0, "status": "failed", "returncode": 1,
                        "error": "exit code 1", "log": str(log)}
    for line in lines[2:]:
        run_dir = tmp_path / "logs" / "default" / "lenet" / f"version_{line['seed']}"
        assert line == json.loads((run_dir / "metrics.json").read_text())
    assert json_lines(out.read_text()) == lines
    assert log.read_text().startswith("$ ") and "RuntimeError: boom" in log.read_text()
    err = captured.err
    assert f"FAILED (exit code 1); log: {log}" in err and "    RuntimeError: boom" in err
    table = err[err.index("model  "):]
    assert "lenet" in table and "50.00%" in table and "51.00%" in table and "flip" in table
    assert model_info("lenet").published in table
    assert f"failed: mlp (default recipe, seed 1): exit code 1; log {log.with_name('mlp-seed1.log')}" in table


def test_a_run_without_metrics_fails_even_with_exit_code_0(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(results, "run_command", FakeFit(silent={"mlp"}))
    assert main(["results", "--models", "mlp", "--logdir", str(tmp_path)]) == 1
    [line] = json_lines(capsys.readouterr().out)
    assert line["status"] == "failed" and line["returncode"] == 0 and "run folder" in line["error"]


def test_ctrl_c_stops_the_list_and_names_the_finished_runs(tmp_path, capsys, monkeypatch):
    fake = FakeFit(interrupt_at=2)
    monkeypatch.setattr(results, "run_command", fake)
    assert main(["results", "--models", "mlp", "lenet", "cnn-bn", "--logdir", str(tmp_path)]) == 130
    captured = capsys.readouterr()
    assert [line["model"] for line in json_lines(captured.out)] == ["mlp"] and len(fake.commands) == 2
    assert "Interrupted during lenet (default recipe, seed 0); 1 of 3 runs finished: mlp seed 0" in captured.err


def test_run_command_appends_the_output_and_returns_the_exit_code(tmp_path):
    log = tmp_path / "run.log"
    log.write_text("before\n")
    script = "import os, sys; print('out', os.environ['PYTHONUNBUFFERED']); print('err', file=sys.stderr); sys.exit(3)"
    assert results.run_command([sys.executable, "-c", script], log) == 3
    assert log.read_text().splitlines() == ["before", "out 1", "err"]


def test_run_folder_is_the_last_one_fit_printed():
    text = "run folder: a/version_0\nEpoch 1\rrun folder: b/version_1 (resuming b/version_1/last.ckpt)\n"
    assert results.find_run_folder(text) == Path("b/version_1")
    assert results.find_run_folder("no such line") is None


@pytest.mark.slow
def test_two_real_fits_give_their_metrics_as_json_lines_and_a_table(tiny_archive, tmp_path, capsys):
    logdir = tmp_path / "logs"
    fit_args = (f"--data-url {tiny_archive.url} --data-md5 {tiny_archive.md5} --max-epochs 1 --val-size 50 "
                "--batch-size 32")
    assert main(["results", "--models", "mlp", "lenet", "--data-dir", str(tmp_path / "data"), "--logdir",
                 str(logdir), "--accelerator", "cpu", "--fit-args", fit_args]) == 0
    captured = capsys.readouterr()
    lines = json_lines(captured.out)
    assert [line["model"] for line in lines] == ["mlp", "lenet"]
    for line in lines:
        run_dir = logdir / "default" / line["model"] / "version_0"
        assert line == json.loads((run_dir / "metrics.json").read_text())
        assert line["epochs"] == 1 and line["seed"] == 0 and line["recipe"] == "default"
        assert f"run folder: {run_dir}" in (logdir / "default" / f"{line['model']}-seed0.log").read_text()
    table = captured.err[captured.err.index("model  "):]
    for line in lines:
        assert line["model"] in table and f"{100 * line['test_acc']:.2f}%" in table
        assert model_info(line["model"]).published in table


def test_sigterm_to_the_list_stops_the_running_fit_like_ctrl_c(tmp_path):
    """A scheduler's SIGTERM to `bench results` passes one SIGINT to the running fit and ends the list."""
    import signal
    import threading
    child = ("import signal, sys, time; signal.signal(signal.SIGINT, lambda *a: sys.exit(130)); "
             "print('ready', flush=True); time.sleep(60)")
    threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
    log = tmp_path / "fit.log"
    with pytest.raises(KeyboardInterrupt):
        results.run_command([sys.executable, "-c", child], log)
    assert "ready" in log.read_text()
    assert signal.getsignal(signal.SIGTERM) is not None  # the previous handler is back
