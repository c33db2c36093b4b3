"""Running `python -m cifar10.sweep` on the tiny archive, as processes of their own, and reading the study back."""

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[1]
SPACE = "lr: {log: [1e-3, 1e-1]}\nlabel_smoothing: {uniform: [0, 0.2]}\n"


def write_space(tmp_path: Path, text: str = SPACE) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def sweep_args(archive, tmp_path: Path, *extra: str, trials: int = 6, epochs: int = 2) -> list[str]:
    """A sweep of the tiny mlp on the tiny archive, without pruning unless `extra` asks for it."""
    return ["--model", "mlp", "--space", str(write_space(tmp_path)), "--trials", str(trials),
            "--logdir", str(tmp_path / "logs"), "--heartbeat", "1", "--pruner", "none",
            "--data-url", archive.url, "--data-md5", archive.md5, "--data-dir", str(tmp_path / "data"),
            "--max-epochs", str(epochs), "--val-size", "50", "--batch-size", "32", "--accelerator", "cpu", *extra]


def env() -> dict[str, str]:
    """This checkout first on the path (also for the fits the sweep starts), the tiny archive allowed."""
    path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return os.environ | {"PYTHONPATH": path, "CIFAR10_ALLOW_SUBSET": "1"}


def start(args: list[str], log: Path) -> subprocess.Popen:
    out = open(log, "wb")
    return subprocess.Popen([sys.executable, "-m", "cifar10.sweep", *args], stdout=out, stderr=subprocess.STDOUT,
                            env=env(), cwd=log.parent)


def finish(process: subprocess.Popen, log: Path, timeout: int = 900) -> str:
    process.wait(timeout=timeout)
    text = log.read_text(errors="replace")
    assert process.returncode == 0, text[-4000:]
    return text


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def load(storage: str, name: str = "mlp-default") -> optuna.Study:
    from cifar10.sweep.storage import open_storage

    return optuna.load_study(study_name=name, storage=open_storage(storage))


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'logs' / 'sweeps' / 'optuna.sqlite3'}"


def check_shared_study(study: optuna.Study, texts: list[str], total: int) -> None:
    """`total` trials, each finished once, in run folders of their own, by both processes."""
    trials = study.get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["COMPLETE"] * total, [(t.number, t.state) for t in trials]
    folders = [t.user_attrs["run_seed0"] for t in trials]
    assert len(set(folders)) == total
    for folder in folders:
        metrics = json.loads((Path(folder) / "metrics.json").read_text())
        assert metrics["status"] == "finished" and metrics["model"] == "mlp"
    assert len({tuple(sorted(t.params.items())) for t in trials}) == total  # no settings drawn twice
    assert len({t.user_attrs["process"] for t in trials}) == 2  # both processes took trials
    for text in texts:
        summary = last_json(text)
        assert summary["states"]["COMPLETE"] == total and summary["trials"] == total
