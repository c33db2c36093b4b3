"""`python -m cifar10.bench results`: a list of fits, one process each, as JSON lines and a table."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

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
    import threading
    child = ("import signal, sys, time; signal.signal(signal.SIGINT, lambda *a: sys.exit(130)); "
             "print('ready', flush=True); time.sleep(60)")
    threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
    log = tmp_path / "fit.log"
    with pytest.raises(KeyboardInterrupt):
        results.run_command([sys.executable, "-c", child], log)
    assert "ready" in log.read_text()
    assert signal.getsignal(signal.SIGTERM) is not None  # the previous handler is back


class QueueFit(FakeFit):
    """FakeFit that also resumes: a `--ckpt-path` command finishes the folder its checkpoint is in; models in
    `stop` leave a last.ckpt and no metrics.json, as a fit stopped by a signal does, and exit 130."""

    def __init__(self, stop=(), **kwargs):
        super().__init__(**kwargs)
        self.stop = set(stop)

    def __call__(self, command: list[str], log: Path) -> int:
        if "--ckpt-path" in command:
            self.commands.append(command)
            run_dir = Path(flag(command, "--ckpt-path")).parent.parent
            (run_dir / "metrics.json").write_text(json.dumps({
                "model": flag(command, "--model"), "recipe": "default", "seed": int(flag(command, "--seed")),
                "epochs": 2, "train_time_s": 1.0, "train_images_per_s": 10.0, "test_acc": 0.7, "status": "finished"}))
            with open(log, "a") as out:
                out.write(f"run folder: {run_dir} (resuming {flag(command, '--ckpt-path')})\n")
            return 0
        model = flag(command, "--model")
        if model not in self.stop:
            return super().__call__(command, log)
        self.commands.append(command)
        run_dir = Path(flag(command, "--logdir")) / model / "version_0"
        (run_dir / "checkpoints").mkdir(parents=True)
        (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"saved at the stop")
        with open(log, "a") as out:
            out.write(f"run folder: {run_dir}\nStopped (SIGINT): saved ...\n")
        return 130


def queue(tmp_path: Path, *extra: str) -> list[str]:
    return ["results", "--models", "mlp", "lenet", "cnn-bn", "--logdir", str(tmp_path), *extra]


def test_a_queue_run_again_skips_finished_runs_resumes_the_stopped_one_and_skips_failed(tmp_path, capsys,
                                                                                       monkeypatch):
    first = QueueFit(stop={"lenet"})
    monkeypatch.setattr(results, "run_command", first)
    assert main(queue(tmp_path)) == 130  # a fit stopped by a signal stops the queue
    assert [flag(c, "--model") for c in first.commands] == ["mlp", "lenet"]
    assert "Continue the queue" in capsys.readouterr().err

    again = QueueFit(fail={"cnn-bn"})
    monkeypatch.setattr(results, "run_command", again)
    assert main(queue(tmp_path)) == 1
    captured = capsys.readouterr()
    last = tmp_path / "default" / "lenet" / "version_0" / "checkpoints" / "last.ckpt"
    assert [flag(c, "--model") for c in again.commands] == ["lenet", "cnn-bn"]
    assert again.commands[0] == [*first.commands[1], "--ckpt-path", str(last)]  # resumed from its own folder
    assert [(line["model"], line.get("status")) for line in json_lines(captured.out)] == [
        ("mlp", None), ("lenet", "finished"), ("cnn-bn", "failed")]
    assert "mlp (default recipe, seed 0): done earlier" in captured.err
    assert f"lenet (default recipe, seed 0): resuming {last}" in captured.err

    third = QueueFit()
    monkeypatch.setattr(results, "run_command", third)
    assert main(queue(tmp_path)) == 1  # cnn-bn's failure is reported, not retried
    assert third.commands == []
    assert "cnn-bn (default recipe, seed 0): failed earlier (exit code 1; --retry-failed" in capsys.readouterr().err

    assert main(queue(tmp_path, "--retry-failed")) == 0  # this FakeFit no longer fails cnn-bn
    assert [flag(c, "--model") for c in third.commands] == ["cnn-bn"]


def test_runs_finished_earlier_are_not_appended_to_out_twice(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(results, "run_command", QueueFit())
    out = tmp_path / "results.jsonl"
    assert main(["results", "--models", "mlp", "--logdir", str(tmp_path), "--out", str(out)]) == 0
    assert main(["results", "--models", "mlp", "--logdir", str(tmp_path), "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 1
    assert len(json_lines(capsys.readouterr().out)) == 2  # but printed each time


def test_dry_run_says_what_the_queue_would_do_with_each_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(results, "run_command", QueueFit(stop={"lenet"}, fail={"cnn-bn"}))
    main(queue(tmp_path, "--models", "mlp", "cnn-bn"))  # cnn-bn fails
    main(queue(tmp_path))  # stopped at lenet
    capsys.readouterr()
    assert main(queue(tmp_path, "--dry-run")) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("# mlp (default recipe, seed 0): done earlier")
    assert "--ckpt-path " + str(tmp_path / "default" / "lenet" / "version_0" / "checkpoints" / "last.ckpt") in lines[1]
    assert lines[2].startswith("# cnn-bn (default recipe, seed 0): failed earlier")


def test_an_interrupted_queue_prints_the_command_that_continues_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(results, "run_command", FakeFit(interrupt_at=2))
    argv = ["results", "--models", "mlp", "lenet", "--seeds", "0", "1", "--logdir", str(tmp_path),
            "--data-dir", "d", "--fit-args", "--max-epochs 2"]
    assert main(argv) == 130
    err = capsys.readouterr().err
    command = err[err.index("with: python -m cifar10.bench") + len("with: "):].splitlines()[0]
    assert command.startswith("python -m cifar10.bench results ")
    assert build_parser().parse_args(shlex.split(command)[3:]) == build_parser().parse_args(argv)


def start_queue(tiny_archive, tmp_path: Path, logdir: Path) -> subprocess.Popen:
    fit_args = (f"--data-url {tiny_archive.url} --data-md5 {tiny_archive.md5} --max-epochs 6 --val-size 50 "
                "--batch-size 32")
    argv = [sys.executable, "-m", "cifar10.bench", "results", "--models", "mlp", "lenet", "--data-dir",
            str(tmp_path / "data"), "--logdir", str(logdir), "--accelerator", "cpu", "--fit-args", fit_args]
    source = str(Path(__file__).resolve().parents[1])
    env = os.environ | {"PYTHONPATH": source + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def final_runs(logdir: Path) -> dict[str, tuple[dict, dict]]:
    found = {}
    for model in ("mlp", "lenet"):
        run_dir = logdir / "default" / model / "version_0"
        assert not (logdir / "default" / model / "version_1").exists(), "a run was started again from scratch"
        weights = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        found[model] = json.loads((run_dir / "metrics.json").read_text()), weights
    return found


@pytest.mark.slow
def test_a_queue_stopped_during_its_second_run_and_started_again_ends_as_one_never_stopped(tiny_archive, tmp_path):
    straight = start_queue(tiny_archive, tmp_path, tmp_path / "straight")
    assert straight.wait(timeout=600) == 0, straight.stderr.read()

    logdir = tmp_path / "stopped"
    stopped = start_queue(tiny_archive, tmp_path, logdir)
    second_saved = logdir / "default" / "lenet" / "version_0" / "checkpoints" / "last.ckpt"
    while not second_saved.exists() and stopped.poll() is None:  # the end of lenet's first epoch
        time.sleep(0.02)
    stopped.send_signal(signal.SIGTERM)
    assert stopped.wait(timeout=120) == 130
    err = stopped.stderr.read()
    assert not (logdir / "default" / "lenet" / "version_0" / "metrics.json").exists(), "stopped too late"
    command = err[err.index("with: python -m cifar10.bench") + len("with: "):].splitlines()[0]
    assert build_parser().parse_args(shlex.split(command)[3:]).models == ["mlp", "lenet"]

    again = start_queue(tiny_archive, tmp_path, logdir)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    assert "mlp (default recipe, seed 0): done earlier" in err and f"resuming {second_saved}" in err
    assert [line["model"] for line in json_lines(out)] == ["mlp", "lenet"]
    assert (logdir / "default" / "mlp-seed0.log").read_text().count("\n$ ") + 1 == 1  # mlp trained once
    expected, found = final_runs(tmp_path / "straight"), final_runs(logdir)
    for model in ("mlp", "lenet"):
        (metrics_a, weights_a), (metrics_b, weights_b) = expected[model], found[model]
        for key in ("epochs", "best_val_acc", "test_acc", "per_class_acc"):
            assert metrics_b[key] == metrics_a[key], (model, key)
        for name in weights_a:
            assert torch.equal(weights_a[name], weights_b[name]), (model, name)
    assert found["lenet"][0]["resumed_from"] == str(second_saved)


def test_a_damaged_metrics_json_is_a_failed_run_naming_the_key(tmp_path, capsys, monkeypatch):
    def damaging(command: list[str], log: Path) -> int:
        code = FakeFit()(command, log)
        run_dir = Path(flag(command, "--logdir")) / flag(command, "--model") / "version_0"
        metrics = json.loads((run_dir / "metrics.json").read_text())
        (run_dir / "metrics.json").write_text(json.dumps(metrics | {"test_acc": "very high"}))
        return code

    monkeypatch.setattr(results, "run_command", damaging)
    assert main(["results", "--models", "mlp", "--logdir", str(tmp_path)]) == 1
    [line] = json_lines(capsys.readouterr().out)
    assert line["status"] == "failed" and "'test_acc'" in line["error"] and "not a finite number" in line["error"]
