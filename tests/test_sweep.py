"""python -m cifar10.sweep end to end on the tiny archive: real fits, a real SQLite study read back."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from cifar10.sweep import cli, space
from helpers_sweep import (check_shared_study, env, finish, last_json, load, sqlite_url, start, sweep_args,
                           write_space)


@pytest.fixture(scope="module")
def shared_study(tiny_archive, tmp_path_factory):
    """Two sweep processes started together on one SQLite study of 6 trials."""
    tmp_path = tmp_path_factory.mktemp("sweep")
    args = sweep_args(tiny_archive, tmp_path, trials=6)
    logs = [tmp_path / f"sweep{i}.log" for i in (0, 1)]
    processes = [start(args, log) for log in logs]
    texts = [finish(p, log) for p, log in zip(processes, logs)]
    return tmp_path, args, texts


@pytest.mark.slow
def test_two_processes_share_one_sqlite_study(shared_study):
    tmp_path, _, texts = shared_study
    check_shared_study(load(sqlite_url(tmp_path)), texts, total=6)
    study_dir = tmp_path / "logs" / "sweeps" / "mlp-default"
    assert len(list((study_dir / "mlp").glob("version_*"))) == 6
    for name in ("history.png", "importance.png"):
        assert (study_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = texts[0].strip().splitlines()
    assert table[-1].startswith("{") and sum(" COMPLETE " in line for line in table) == 6


@pytest.mark.slow
def test_report_and_best_yaml_train_with_fit_config(shared_study, tiny_archive):
    tmp_path, args, _ = shared_study
    summary = last_json(cli_output(["--report", "--study", "mlp-default", "--logdir", str(tmp_path / "logs")]))
    study = load(sqlite_url(tmp_path))
    assert summary["best_value"] == study.best_value and summary["best_params"] == study.best_params
    best = yaml.safe_load(Path(summary["best_yaml"]).read_text())
    assert best == {"model": "mlp", "recipe": "default", "max_epochs": 2, "val_size": 50, "batch_size": 32,
                    "accelerator": "cpu", **study.best_params}
    done = subprocess.run([sys.executable, "-m", "cifar10.fit", "--config", summary["best_yaml"],
                           "--data-url", tiny_archive.url, "--data-md5", tiny_archive.md5,
                           "--data-dir", str(tmp_path / "data"), "--logdir", str(tmp_path / "best")],
                          capture_output=True, text=True, env=env(), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "best" / "mlp" / "version_0" / "metrics.json").read_text())
    assert metrics["status"] == "finished"
    assert {k: metrics["settings"][k] for k in study.best_params} == study.best_params


def cli_output(argv: list[str]) -> str:
    done = subprocess.run([sys.executable, "-m", "cifar10.sweep", *argv], capture_output=True, text=True,
                          env=env(), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_a_killed_sweep_resumes_its_trial_and_ends_at_the_count(tiny_archive, tmp_path):
    args = sweep_args(tiny_archive, tmp_path, trials=2, epochs=8)
    log = tmp_path / "first.log"
    first = start(args, log)
    run_dir = tmp_path / "logs" / "sweeps" / "mlp-default" / "mlp" / "version_0"
    wait_for(lambda: (run_dir / "checkpoints" / "last.ckpt").is_file() or first.poll() is not None, 600)
    first.send_signal(signal.SIGKILL)  # no clean-up: the trial stays RUNNING until its heartbeat is stale
    first.wait()
    assert not (run_dir / "metrics.json").exists(), "the trial finished before the kill; nothing was tested"
    text = finish(start(args, tmp_path / "second.log"), tmp_path / "second.log")

    trials = load(sqlite_url(tmp_path)).get_trials(deepcopy=False)
    states = [t.state.name for t in trials]
    assert sorted(states) == ["COMPLETE", "COMPLETE", "FAIL"], states
    killed = next(t for t in trials if t.state.name == "FAIL")
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == killed.number)
    assert retry.state.name == "COMPLETE" and retry.params == killed.params
    assert retry.user_attrs["run_seed0"] == killed.user_attrs["run_seed0"] == str(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["resumed_from"] == str(run_dir / "checkpoints" / "last.ckpt")
    assert metrics["epochs"] == 8
    assert len(list(run_dir.parent.glob("version_*"))) == 2  # the resumed trial made no new folder
    assert last_json(text)["states"] == {"COMPLETE": 2, "PRUNED": 0, "FAIL": 1, "RUNNING": 0, "WAITING": 0}


def wait_for(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.2)


@pytest.mark.slow
def test_a_trial_below_the_median_is_pruned_and_marked(tiny_archive, tmp_path, capsys):
    """Five earlier trials at 100% validation accuracy in every epoch: a real one falls below their median
    at its first epoch, so MedianPruner (Optuna's defaults: 5 startup trials) prunes it there."""
    argv = sweep_args(tiny_archive, tmp_path, "--pruner", "median", trials=6, epochs=3)
    args, rest = cli.build_parser().parse_known_args(argv)
    args.fit_tokens = rest
    _, study = cli.plan_and_study(args, cli.fit_flags(rest))
    distributions = {"lr": optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True),
                     "label_smoothing": optuna.distributions.FloatDistribution(0, 0.2)}
    for i in range(5):
        study.add_trial(optuna.create_trial(params={"lr": 0.01, "label_smoothing": 0.02 * i},
                                            distributions=distributions, value=1.0,
                                            intermediate_values={0: 1.0, 1: 1.0, 2: 1.0}))
    # the space's smallest lr: with a sampled one the tiny data can be learnt perfectly in one epoch
    study.enqueue_trial({"lr": 1e-3, "label_smoothing": 0.0})
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    pruned = load(sqlite_url(tmp_path)).trials[5]
    assert pruned.params == {"lr": 1e-3, "label_smoothing": 0.0}
    assert pruned.state.name == "PRUNED" and list(pruned.intermediate_values) == [0]
    metrics = json.loads((Path(pruned.user_attrs["run_seed0"]) / "metrics.json").read_text())
    assert metrics["status"] == "pruned" and metrics["pruned_at_epoch"] == 0 and metrics["test_acc"] is None
    assert metrics["best_val_acc"] == pytest.approx(pruned.intermediate_values[0])
    row = next(line for line in out.splitlines() if line.lstrip().startswith("5 "))
    assert "PRUNED" in row and "pruned after epoch 0" in row
    assert last_json(out)["states"]["PRUNED"] == 1


# ---- clear errors before any trial runs


def error_of(argv: list[str], capsys) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


@pytest.mark.parametrize("text, says", [
    ("colour: {choice: [red]}\n", "colour is not a fit setting"),
    ("seed: {int: [0, 3]}\n", "seeds are --seeds"),
    ("batch_size: {log: [16, 64]}\n", "batch_size is an integer, so its range must be int or choice"),
    ("augment: {uniform: [0, 1]}\n", "its range must be choice"),
    ("augment: {choice: []}\n", "choice needs a non-empty list"),
    ("augment: {choice: [flip, sideways]}\n", "augment = 'sideways' would not train"),
    ("lr: {log: [0, 0.1]}\n", "log needs low > 0"),
    ("lr: {uniform: [0.1, 0.01]}\n", "is empty"),
    ("label_smoothing: {uniform: [0, 1.5]}\n", "--label-smoothing 1.5 must be in [0, 1)"),
    ("max_epochs: {int: [5, 30.5]}\n", "int needs two integers"),
    ("lr: [1e-4, 1e-1]\n", "must be one range of the form {KIND: [...]}"),
    ("- lr\n", "must be a non-empty mapping"),
    ("lr: {log: [1e-4, 1e-1]\n", "is not valid YAML"),
    ("!!python/object:os.system {}\n", "is not valid YAML"),  # safe_load: no tags, no code
])
def test_bad_spaces_are_clear_errors(tmp_path, capsys, text, says):
    argv = ["--model", "mlp", "--space", str(write_space(tmp_path, text)), "--trials", "2",
            "--logdir", str(tmp_path / "logs")]
    assert says in error_of(argv, capsys)
    assert not (tmp_path / "logs" / "sweeps").exists()  # checked before the study was opened


def test_an_oversized_space_is_refused(tmp_path, capsys):
    path = write_space(tmp_path, "lr: {log: [1e-4, 1e-1]}\n" + "#" * (space.MAX_BYTES + 1))
    assert "larger than 64 KiB" in error_of(["--model", "mlp", "--space", str(path), "--trials", "1"], capsys)


def test_an_unreachable_storage_is_a_clear_error(tmp_path, capsys):
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://sweeper:secret@127.0.0.1:{port}/optuna"
    err = error_of(["--model", "mlp", "--space", str(write_space(tmp_path)), "--trials", "2", "--storage", url],
                   capsys)
    assert f"cannot open the study storage postgresql+psycopg://sweeper:***@127.0.0.1:{port}/optuna" in err
    assert "secret" not in err


def test_a_study_of_another_model_is_a_clear_error(tmp_path, capsys):
    common = ["--space", str(write_space(tmp_path)), "--study", "shared", "--logdir", str(tmp_path / "logs")]
    args, rest = cli.build_parser().parse_known_args(["--model", "mlp", "--trials", "2", *common])
    args.fit_tokens = rest
    cli.plan_and_study(args, {})  # the study exists, made for mlp
    err = error_of(["--model", "lenet", "--trials", "2", *common], capsys)
    assert "study 'shared' already exists with other settings: model 'mlp' there, 'lenet' here" in err


@pytest.mark.parametrize("flags, says", [
    (["--seed", "3"], "--seed (use --seeds)"),
    (["--ckpt-path", "last"], "the sweep sets this for each trial itself"),
    (["--lr", "0.1"], "lr is searched there and also given as a fit flag"),
    (["--colour", "red"], "unrecognized arguments: --colour"),
    (["--batch-size", "0"], "--batch-size 0 must be at least 1"),
])
def test_bad_fit_flags_are_clear_errors(tmp_path, capsys, flags, says):
    argv = ["--model", "mlp", "--space", str(write_space(tmp_path)), "--trials", "2",
            "--logdir", str(tmp_path / "logs"), *flags]
    assert says in error_of(argv, capsys)


def test_report_of_a_missing_study_names_the_existing_ones(tmp_path, capsys):
    args, rest = cli.build_parser().parse_known_args(["--model", "mlp", "--trials", "2", "--space",
                                                      str(write_space(tmp_path)), "--logdir", str(tmp_path)])
    args.fit_tokens = rest
    cli.plan_and_study(args, {})
    err = error_of(["--report", "--study", "nope", "--logdir", str(tmp_path)], capsys)
    assert "no study 'nope'" in err and "it has: mlp-default" in err


def test_grid_needs_discrete_ranges(tmp_path, capsys):
    argv = ["--model", "mlp", "--space", str(write_space(tmp_path)), "--trials", "2", "--sampler", "grid",
            "--logdir", str(tmp_path / "logs")]
    assert "--sampler grid needs discrete ranges, but lr is {log: [0.001, 0.1]}" in error_of(argv, capsys)

