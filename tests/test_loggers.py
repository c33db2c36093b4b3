"""--logger: TensorBoard, CSV, MLflow (a local store and a real `mlflow server`) and W&B (offline), with every
figure, resumed into the same logger run, and clear errors for loggers that cannot start."""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import lightning as L
import pytest

from cifar10 import loggers, reporting
from cifar10.fit import main
from cifar10.fit_settings import given_settings, resolve_settings

mlflow = pytest.importorskip("mlflow")  # in the dev extra: `pip install -e '.[dev]'`
from mlflow.tracking import MlflowClient  # noqa: E402

FIGURES = ("test/confusion_matrix", "test/per_class_accuracy", "test/misclassified")
SCALARS = {"train/loss_step", "train/loss_epoch", "train/acc", "val/loss", "val/acc", "test/acc", "test/loss",
           "lr-SGD", "hp/test_acc", "hp/best_val_acc"}


def data_args(archive, tmp_path: Path) -> list[str]:
    """Where the data is: given again on resume (a checkpoint chooses no paths, URLs or checksums)."""
    return ["--data-url", archive.url, "--data-md5", archive.md5, "--data-dir", str(tmp_path / "data")]


def fit_args(archive, tmp_path: Path, *extra: str) -> list[str]:
    """mlp on the tiny archive, 2 epochs of 3 steps (250 training images, batches of 32)."""
    return [*data_args(archive, tmp_path), "--model", "mlp", "--max-epochs", "2", "--limit-train-batches", "3",
            "--val-size", "50", "--batch-size", "32", "--accelerator", "cpu", "--seed", "1",
            "--logdir", str(tmp_path / "logs"), *extra]


class StopAt(L.Callback):
    """A real SIGTERM to this process during the forward pass of a given training step."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        if (trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_idx) == (self.epoch, self.batch):
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.fixture(autouse=True)
def _mlflow_http_settings_restored(monkeypatch):
    """cifar10.loggers sets MLflow's HTTP retry variables when they are unset: put them back after each test."""
    for name in loggers.MLFLOW_HTTP_DEFAULTS:
        monkeypatch.delenv(name, raising=False)


def run_folder(tmp_path: Path) -> Path:
    return tmp_path / "logs" / "mlp" / "version_0"


def csv_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as file:
        return list(csv.DictReader(file))


def steps_of(rows: list[dict[str, str]], key: str) -> list[int]:
    return [int(row["step"]) for row in rows if row.get(key)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- flags and errors (nothing trains) ------------------------------------------------------------------------

def assert_clean_error(code: int, err: str, *needles: str) -> None:
    assert code == 2 and "Traceback" not in err
    message = err.strip().splitlines()[-1]
    assert message.startswith("error: "), err
    for needle in needles:
        assert needle in message, message


def test_loggers_are_named_spaced_comma_separated_or_in_the_config(tmp_path):
    assert resolve_settings(given_settings([]))[0]["logger"] == ["tensorboard"]
    assert given_settings(["--logger", "csv,mlflow", "wandb", "csv"])["logger"] == ["csv", "mlflow", "wandb"]
    config = tmp_path / "run.yaml"
    config.write_text("logger: [csv, wandb]\nwandb-project: lab\nlog_checkpoints: true\n")
    given = given_settings(["--config", str(config)])
    assert (given["logger"], given["wandb_project"], given["log_checkpoints"]) == (["csv", "wandb"], "lab", True)


def test_the_loggers_own_environment_variables_are_defaults_and_flags_win(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    monkeypatch.setenv("WANDB_PROJECT", "from-env")
    flat = resolve_settings(given_settings(["--mlflow-experiment", "mine"]))[0]
    assert (flat["mlflow_uri"], flat["wandb_project"], flat["mlflow_experiment"]) == \
        ("http://127.0.0.1:1", "from-env", "mine")
    assert resolve_settings(given_settings(["--mlflow-uri", "sqlite:///x.db"]))[0]["mlflow_uri"] == "sqlite:///x.db"


def test_unknown_logger(capsys):
    assert_clean_error(main(["--logger", "tensorboard,neptune"]), capsys.readouterr().err, "neptune", "mlflow", "wandb")


def test_missing_optional_package_is_one_line_before_anything_is_made(tiny_archive, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # what an environment without wandb imports
    code = main(fit_args(tiny_archive, tmp_path, "--logger", "tensorboard,wandb"))
    assert_clean_error(code, capsys.readouterr().err, "wandb", "pip install 'lightning-cifar10[wandb]'")
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize("uri, needle", [("nonsense://nowhere", "nonsense://nowhere"),
                                         (None, "http://127.0.0.1:")])  # None: a port nothing listens on
def test_bad_or_unreachable_tracking_uri_fails_before_training(tiny_archive, tmp_path, capsys, uri, needle):
    uri = uri or f"http://127.0.0.1:{free_port()}"
    code = main(fit_args(tiny_archive, tmp_path, "--logger", "tensorboard,mlflow", "--mlflow-uri", uri))
    assert_clean_error(code, capsys.readouterr().err, needle, "--mlflow-uri", "nothing was trained")
    assert not list((tmp_path / "logs").glob("mlp/version_*")), "no run folder is left behind"


# --- TensorBoard and CSV ---------------------------------------------------------------------------------------

def test_csv_holds_the_same_keys_and_evaluate_curves_read_the_runs_own_record(tiny_archive, tmp_path):
    assert main(fit_args(tiny_archive, tmp_path, "--logger", "tensorboard", "csv")) == 0
    run_dir = run_folder(tmp_path)
    rows = csv_rows(run_dir)
    assert SCALARS <= set(rows[0]), rows[0].keys()
    assert steps_of(rows, "val/acc") == [2, 5] and len(steps_of(rows, "test/acc")) == 1
    assert list(run_dir.glob("events.out.tfevents.*")), "TensorBoard still logs beside it"
    params = (run_dir / "hparams.yaml").read_text()
    assert "lr:" in params and "data_dir" not in params and "logdir" not in params  # the HPARAMS view

    from_json = reporting.curves_from_metrics_json(run_dir)
    assert set(from_json) == set(reporting.CURVE_TAGS) and all(set(v) == {0, 1} for v in from_json.values())
    from_csv = reporting.curves_from_csv(run_dir)
    assert from_csv.keys() == from_json.keys()
    assert all(from_csv[tag] == pytest.approx(from_json[tag]) for tag in from_json)
    for events in run_dir.glob("events.out.tfevents.*"):  # neither needs the event files
        events.unlink()
    assert reporting.read_curves(run_dir) == from_json


# --- MLflow -------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_mlflow_without_a_server_keeps_its_store_in_the_logdir(tiny_archive, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(fit_args(tiny_archive, tmp_path, "--logger", "mlflow", "--max-epochs", "1")) == 0
    logdir = tmp_path / "logs"
    assert (logdir / "mlflow.db").is_file()
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()  # nothing in the current folder
    run_id = json.loads((run_folder(tmp_path) / "metrics.json").read_text())["logger_runs"]["mlflow"]
    client = MlflowClient(f"sqlite:///{logdir / 'mlflow.db'}")
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "mlp/version_0"
    assert run.info.artifact_uri.startswith((logdir / "mlartifacts").as_uri())
    assert {"test/acc", "val/acc", "train/loss_step"} <= set(run.data.metrics)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on 127.0.0.1 with a temporary SQLite backend and artifact store; stopped at the end."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = open(root / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # its own group: its workers stop with it
    uri = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # at most about 5 minutes (it creates its tables first)
            if server.poll() is not None:
                pytest.fail(f"mlflow server exited: {(root / 'server.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"mlflow server did not answer: {(root / 'server.log').read_text()[-3000:]}")
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def only_run(client: MlflowClient, experiment: str):
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return runs[0]


@pytest.mark.slow
def test_a_fit_against_a_tracking_server_is_read_back(tiny_archive, tmp_path, mlflow_server):
    assert main(fit_args(tiny_archive, tmp_path, "--logger", "mlflow", "--mlflow-uri", mlflow_server,
                         "--mlflow-experiment", "read-back", "--log-checkpoints")) == 0
    client = MlflowClient(mlflow_server)
    run = only_run(client, "read-back")
    assert run.info.status == "FINISHED"
    assert SCALARS <= set(run.data.metrics)
    metrics = json.loads((run_folder(tmp_path) / "metrics.json").read_text())
    assert run.data.metrics["hp/test_acc"] == pytest.approx(metrics["test_acc"])
    assert metrics["logger_runs"] == {"mlflow": run.info.run_id}
    params = run.data.params
    assert (params["model"], params["lr"], params["batch_size"], params["max_epochs"]) == ("mlp", "0.02", "32", "2")
    assert int(params["params"]) == metrics["params"]
    assert not set(params) & {"data_dir", "data_url", "data_md5", "logdir", "mlflow_uri", "ckpt_path", "mean"}

    artifacts = {a.path for folder in ("test", "train", "checkpoints")
                 for a in client.list_artifacts(run.info.run_id, folder)}
    assert {f"{tag}.png" for tag in FIGURES} | {"train/augmented_images.png", "checkpoints/best.ckpt",
                                                 "checkpoints/last.ckpt"} <= artifacts
    png = Path(client.download_artifacts(run.info.run_id, "test/confusion_matrix.png", str(tmp_path)))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


@pytest.mark.slow
def test_a_fit_stopped_by_sigterm_and_resumed_is_one_mlflow_run_without_repeated_steps(tiny_archive, tmp_path,
                                                                                         mlflow_server):
    args = fit_args(tiny_archive, tmp_path, "--logger", "mlflow", "--mlflow-uri", mlflow_server,
                    "--mlflow-experiment", "resumed")
    assert main(args, callbacks=[StopAt(epoch=1, batch=1)]) == 143
    client = MlflowClient(mlflow_server)
    assert only_run(client, "resumed").info.status == "KILLED"

    assert main(["--logdir", str(tmp_path / "logs"), "--model", "mlp", "--ckpt-path", "last",  # loggers inherited
                 *data_args(tiny_archive, tmp_path),
                 "--max-epochs", "3"]) == 0
    run = only_run(client, "resumed")
    assert run.info.status == "FINISHED"
    assert run.data.params["max_epochs"] == "2" and run.data.tags["resumed.max_epochs"] == "3"  # params are for good
    for key in set(run.data.metrics) - {"epoch"}:  # Lightning logs `epoch` beside every epoch-level group
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert len(steps) == len(set(steps)), (key, steps)
    history = {key: [m.step for m in client.get_metric_history(run.info.run_id, key)]
               for key in ("train/loss_step", "val/acc", "lr-SGD")}
    assert history["val/acc"] == [2, 5, 8] and sorted(history["train/loss_step"]) == [1, 3, 5, 7]
    assert sorted(history["lr-SGD"]) == [1, 3, 5, 7]


class Proxy:
    """A TCP relay to the tracking server that can be cut: the server goes away, as far as the fit can tell."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # cut
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(): from now on connections are refused
        self.listener.close()
        for s in self.open:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


class CutAt(L.Callback):
    def __init__(self, proxy: Proxy, epoch: int) -> None:
        self.proxy, self.epoch = proxy, epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            self.proxy.cut()


@pytest.mark.slow
def test_a_tracking_server_going_away_mid_run_is_a_warning_and_the_run_goes_on(tiny_archive, tmp_path,
                                                                              mlflow_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the refused connections fail at once
    proxy = Proxy(int(mlflow_server.rsplit(":", 1)[1]))
    args = fit_args(tiny_archive, tmp_path, "--logger", "mlflow", "csv", "--mlflow-uri",
                    f"http://127.0.0.1:{proxy.port}", "--mlflow-experiment", "cut")
    with pytest.warns(UserWarning, match="the run goes on without this logger"):
        assert main(args, callbacks=[CutAt(proxy, epoch=1)]) == 0
    run_dir = run_folder(tmp_path)
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "finished"
    assert steps_of(csv_rows(run_dir), "val/acc") == [2, 5]  # the other logger has every epoch
    run = only_run(MlflowClient(mlflow_server), "cut")
    assert run.data.metrics and "test/acc" not in run.data.metrics  # it logged until the server went away


# --- Weights & Biases, offline ------------------------------------------------------------------------------------

def wandb_records(path: Path) -> list:
    """The records of a W&B run file: a 7-byte header (":W&B", magic, version), then protobuf `Record`s in
    LevelDB's log format (32 KiB blocks; each piece a 7-byte header: checksum, length, type FULL/FIRST/MIDDLE/LAST)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, pending, records = 7, b"", []
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_history(run_file: Path) -> list[dict]:
    rows = []
    for record in wandb_records(run_file):
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return rows


@pytest.fixture
def wandb_offline(monkeypatch):
    """W&B without an account or network; its service process is stopped afterwards."""
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    yield
    wandb.teardown()


@pytest.mark.slow
def test_wandb_offline_run_holds_metrics_and_images_and_resumes_as_the_same_run(tiny_archive, tmp_path,
                                                                              wandb_offline):
    args = fit_args(tiny_archive, tmp_path, "--logger", "wandb", "csv", "--wandb-project", "cifar10-test")
    assert main(args, callbacks=[StopAt(epoch=1, batch=1)]) == 143
    assert main(["--logdir", str(tmp_path / "logs"), "--model", "mlp", "--ckpt-path", "last",
                 *data_args(tiny_archive, tmp_path)]) == 0
    run_dir = run_folder(tmp_path)
    run_id = json.loads((run_dir / "metrics.json").read_text())["logger_runs"]["wandb"]
    sessions = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(sessions) == 2 and all(s.name.endswith(f"-{run_id}") for s in sessions), sessions  # one run, twice

    rows = [row for s in sessions for row in wandb_history(s / f"run-{run_id}.wandb")]
    logged = Counter(key for row in rows for key in row)
    assert all(logged[key] for key in SCALARS), logged
    loss_steps = [row["trainer/global_step"] for row in rows if "train/loss_step" in row]
    assert loss_steps == [1, 3, 5]  # continued from the checkpoint's step, none twice
    assert [row["trainer/global_step"] for row in rows if "val/acc" in row] == [2, 5]
    for tag in ("train/augmented_images", *FIGURES):
        files = [f for row in rows for f in row.get(f"{tag}/filenames", [])]
        assert len(files) == 1 and any((s / "files" / files[0]).is_file() for s in sessions), tag

    assert steps_of(csv_rows(run_dir), "train/loss_step") == [1, 3, 5]  # metrics.csv continued, not replaced
