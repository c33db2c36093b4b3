"""Where a fit logs (`--logger tensorboard,csv,mlflow,wandb`): Lightning's own loggers, built from the run's
settings, and one adapter that decides per logger how what `log_metrics` does not carry reaches it.

Scalars (per step, per epoch, the learning rate, the test metrics) reach every logger through Lightning
itself. The rest goes through the functions at the end of this module, which look up each logger's
`Sink` by its class (`SINKS`): an image (the augmented batch), matplotlib figures (confusion matrix,
per-class accuracy, misclassified images), the hyper-parameters, the final metrics, files as artifacts
(`--log-checkpoints`), and the end of the logger's run.

Every logger writes into the run folder `<logdir>/<model>/version_N/` (TensorBoard's layout, chosen before
the loggers are built) or into its own store: MLflow into `sqlite:///<logdir>/mlflow.db` unless a tracking
URI is given (MLflow 3 keeps its file store in maintenance mode and recommends a database,
https://mlflow.org/docs/latest/self-hosting/migrate-from-file-store), W&B into `<run folder>/wandb/`.
The MLflow and W&B run ids go into every checkpoint (`LoggerRuns`), so a resumed fit continues the same
run: `MLFlowLogger(run_id=...)` and `WandbLogger(id=..., resume="allow")` (Lightning's logger docs).
"""

import csv
import functools
import importlib
import io
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from matplotlib.figure import Figure

from cifar10.errors import UserError

DISTRIBUTION = "lightning-cifar10"  # the name pip installs this project under (`cifar10` is taken on PyPI)
OPTIONAL_PACKAGES = {"mlflow": "mlflow", "wandb": "wandb"}  # logger -> the package it needs (an extra of ours)
# MLflow's HTTP client retries 7 times with a backoff factor of 2 and a 120 s timeout (its
# environment_variables.py): minutes on every call once a server is gone. Fewer, unless the user set them.
MLFLOW_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                        "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
ENDED = {"success": "FINISHED", "failed": "FAILED", "killed": "KILLED"}  # our run ends -> MLflow's RunStatus


def logger_names() -> tuple[str, ...]:
    return tuple(BUILDERS)


def importable(package: str) -> bool:
    try:
        importlib.import_module(package)  # imported now rather than halfway into the set-up: it is used next
    except ImportError:
        return False
    return True


def check_available(names: Iterable[str]) -> None:
    """A logger whose package is not installed is one clear error before anything is made."""
    for name in names:
        package = OPTIONAL_PACKAGES.get(name)
        if package and not importable(package):
            raise UserError(f"--logger {name} needs the {package} package, which is not installed. Install it with "
                            f"`pip install '{DISTRIBUTION}[{name}]'` (or `pip install {package}`), or leave {name} "
                            "out of --logger.")


# --- surviving a tracking server that goes away -------------------------------------------------------------

class Remote:
    """A logger that talks to a server: after its first failure it warns once and logs nothing more, so the
    run goes on with its other loggers (the failure may be an MlflowException, a requests or an OS error,
    depending on where the connection broke, hence the broad catch)."""

    lost = False

    def attempt(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.lost:
            return None
        try:
            return call(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 (see the class docstring)
            self.lost = True
            rank_zero_warn(f"{type(self).__name__}: logging failed ({type(err).__name__}: {str(err)[:300]}); the "
                           "run goes on without this logger, with the others.")
            return None


def attempt(logger: Logger, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`call` through the logger's `Remote.attempt` where it has one (ours), else directly."""
    if isinstance(logger, Remote):
        return logger.attempt(call, *args, **kwargs)
    return call(*args, **kwargs)


def unless_lost(method: Callable[..., Any]) -> Callable[..., Any]:
    """A Lightning logger method that goes through `Remote.attempt`."""
    @functools.wraps(method)
    def guarded(self: Remote, *args: Any, **kwargs: Any) -> Any:
        return self.attempt(method, self, *args, **kwargs)
    return guarded


class MLflowRun(Remote, MLFlowLogger):
    """Lightning's MLFlowLogger, surviving a lost server; its run ends once, in `Sink.close`, not at the
    end of each trainer.fit and trainer.test (where Lightning calls `finalize`)."""

    log_metrics = unless_lost(MLFlowLogger.log_metrics)
    log_hyperparams = unless_lost(MLFlowLogger.log_hyperparams)

    def finalize(self, status: str = "success") -> None:
        pass


class WandbRun(Remote, WandbLogger):
    """Lightning's WandbLogger, surviving a lost connection."""

    log_metrics = unless_lost(WandbLogger.log_metrics)
    log_hyperparams = unless_lost(WandbLogger.log_hyperparams)


# --- CSV that continues on resume ----------------------------------------------------------------------------

class ContinuedWriter(ExperimentWriter):
    """Lightning's CSV writer, continuing an existing metrics.csv (a resumed run) where Lightning's deletes
    it; the existing header is taken up, so the earlier rows keep their columns."""

    def _check_log_dir_exists(self) -> None:
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as file:
                self.metrics_keys = next(csv.reader(file), [])


class CSVRun(CSVLogger):
    """CSVLogger writing metrics.csv and hparams.yaml into the run folder, continued when it is resumed."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ContinuedWriter:
        if self._experiment is None:
            os.makedirs(self.log_dir, exist_ok=True)
            self._experiment = ContinuedWriter(log_dir=self.log_dir)
        return self._experiment


# --- building them --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """What a builder needs: the settings' run section, the run folder and the logger runs to continue."""

    run: Any  # cifar10.settings.RunSettings
    run_dir: Path
    resumed: dict[str, str] = field(default_factory=dict)  # logger name -> run id (LoggerRuns of the checkpoint)

    @property
    def run_name(self) -> str:
        return f"{self.run.model}/{self.run_dir.name}"


def build_tensorboard(t: Target) -> Logger:
    return TensorBoardLogger(save_dir=t.run_dir.parent.parent, name=t.run_dir.parent.name,
                             version=int(t.run_dir.name.removeprefix("version_")), default_hp_metric=False)


def build_csv(t: Target) -> Logger:
    return CSVRun(save_dir=t.run_dir.parent.parent, name=t.run_dir.parent.name,
                  version=int(t.run_dir.name.removeprefix("version_")))


def mlflow_store(t: Target) -> tuple[str, str | None]:
    """(tracking URI, artifact location of a new experiment): --mlflow-uri / MLFLOW_TRACKING_URI, else a SQLite
    store in the logdir. A SQLite store keeps its artifacts beside its file: MLflow's own default for a local
    store is ./mlruns in the current folder."""
    uri = t.run.mlflow_uri
    if uri and not uri.startswith("sqlite:///"):
        return uri, None  # a server (or another store) decides where artifacts go
    database = Path(uri.removeprefix("sqlite:///")) if uri else Path(t.run.logdir).resolve() / "mlflow.db"
    database.parent.mkdir(parents=True, exist_ok=True)
    return uri or f"sqlite:///{database}", (database.resolve().parent / "mlartifacts").as_uri()


def build_mlflow(t: Target) -> Logger:
    for name, value in MLFLOW_HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    uri, artifacts = mlflow_store(t)
    run_id = t.resumed.get("mlflow")
    try:
        logger = MLflowRun(experiment_name=t.run.mlflow_experiment, run_name=t.run_name, tracking_uri=uri,
                           artifact_location=artifacts, run_id=run_id, tags={"cifar10.run_folder": str(t.run_dir)})
        if rank_zero_only.rank == 0:  # the run is made (or found) now: a bad URI or a dead server fails here
            logger.experiment.update_run(logger.run_id, status="RUNNING")
    except Exception as err:  # noqa: BLE001 (MlflowException, requests' errors, ValueError for a bad scheme)
        what = f"the MLflow run {run_id} this checkpoint logged to" if run_id else "an MLflow run"
        raise UserError(f"could not start {what} at {uri} ({type(err).__name__}: {str(err).splitlines()[0][:300]}). "
                        "Check --mlflow-uri / MLFLOW_TRACKING_URI (e.g. http://127.0.0.1:5000 for `mlflow server`, "
                        "or sqlite:///path/mlflow.db) and that the server is up, or leave mlflow out of --logger; "
                        "nothing was trained.") from None
    return logger


def build_wandb(t: Target) -> Logger:
    import wandb

    try:
        logger = WandbRun(project=t.run.wandb_project, name=t.run_name, save_dir=str(t.run_dir),
                          id=t.resumed.get("wandb"), settings=wandb.Settings(console="off"))
        if rank_zero_only.rank == 0:
            logger.experiment  # wandb.init now: no account or no network fails before training
    except Exception as err:  # noqa: BLE001 (wandb raises UsageError, CommError, ... depending on the cause)
        raise UserError(f"could not start a Weights & Biases run ({type(err).__name__}: "
                        f"{str(err).splitlines()[0][:300] if str(err) else 'no detail'}). Log in with `wandb login` "
                        "or WANDB_API_KEY, or run without an account with WANDB_MODE=offline (sync later with "
                        "`wandb sync`), or leave wandb out of --logger; nothing was trained.") from None
    return logger


BUILDERS: dict[str, Callable[[Target], Logger]] = {
    "tensorboard": build_tensorboard, "csv": build_csv, "mlflow": build_mlflow, "wandb": build_wandb}


def build_loggers(run: Any, run_dir: Path, resumed: dict[str, str] | None = None) -> list[Logger]:
    """The loggers `run.logger` names, writing into `run_dir` (or their own store)."""
    check_available(run.logger)
    target = Target(run, Path(run_dir), dict(resumed or {}))
    return [BUILDERS[name](target) for name in run.logger]


# --- what each logger takes besides scalars ----------------------------------------------------------------------

def figure_pixels(figure: Figure) -> np.ndarray:
    """A figure as (H, W, 3) uint8 pixels, through a PNG (what loggers that take images, not figures, get)."""
    from PIL import Image

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


class Sink:
    """How one kind of logger takes what `log_metrics` does not carry. This base takes hyper-parameters and
    final metrics as Lightning's Logger API has them, and no images, figures or files."""

    name = ""  # the --logger name, for LoggerRuns

    def image(self, logger: Logger, tag: str, image_chw: Any, step: int) -> None:
        pass

    def figure(self, logger: Logger, tag: str, figure: Figure, step: int) -> None:
        pass

    def hparams(self, logger: Logger, params: dict[str, Any]) -> None:
        logger.log_hyperparams(params)

    def final(self, logger: Logger, params: dict[str, Any], metrics: dict[str, float], step: int) -> None:
        logger.log_metrics(metrics, step)

    def files(self, logger: Logger, paths: Sequence[Path], folder: str) -> None:
        pass  # a local logger's run folder holds them already

    def run_id(self, logger: Logger) -> str | None:
        return None

    def close(self, logger: Logger, status: str) -> None:
        logger.finalize("success" if status == "success" else "failed")


class TensorBoardSink(Sink):
    """Images and figures as TensorBoard images; hyper-parameters with the final metrics in the HPARAMS tab."""

    name = "tensorboard"

    def image(self, logger: Logger, tag: str, image_chw: Any, step: int) -> None:
        logger.experiment.add_image(tag, image_chw, global_step=step)

    def figure(self, logger: Logger, tag: str, figure: Figure, step: int) -> None:
        logger.experiment.add_figure(tag, figure, global_step=step)

    def final(self, logger: Logger, params: dict[str, Any], metrics: dict[str, float], step: int) -> None:
        logger.log_hyperparams(params, metrics=metrics)


class CSVSink(Sink):
    name = "csv"


class MLflowSink(Sink):
    """Images and figures as PNG artifacts (MlflowClient.log_image / log_figure), files as artifacts.

    MLflow refuses to change a logged parameter: a resumed run with changed settings (a raised --max-epochs)
    logs the new parameters and records each changed value as a `resumed.<name>` tag.
    """

    name = "mlflow"

    def image(self, logger: Logger, tag: str, image_chw: Any, step: int) -> None:
        pixels = np.ascontiguousarray(np.asarray(image_chw).transpose(1, 2, 0))
        attempt(logger, logger.experiment.log_image, logger.run_id, pixels, artifact_file=f"{tag}.png")

    def figure(self, logger: Logger, tag: str, figure: Figure, step: int) -> None:
        attempt(logger, logger.experiment.log_figure, logger.run_id, figure, f"{tag}.png")

    def hparams(self, logger: Logger, params: dict[str, Any]) -> None:
        attempt(logger, self._hparams, logger, params)

    @staticmethod
    def _hparams(logger: MLflowRun, params: dict[str, Any]) -> None:
        client, run_id = logger.experiment, logger.run_id
        logged = client.get_run(run_id).data.params
        as_text = {k: str(v)[:250] for k, v in params.items()}  # what MLFlowLogger.log_hyperparams stores
        MLFlowLogger.log_hyperparams(logger, {k: v for k, v in params.items() if k not in logged})
        for key, value in as_text.items():
            if key in logged and logged[key] != value:
                client.set_tag(run_id, f"resumed.{key}", value)

    def files(self, logger: Logger, paths: Sequence[Path], folder: str) -> None:
        for path in paths:
            attempt(logger, logger.experiment.log_artifact, logger.run_id, str(path), folder)

    def run_id(self, logger: Logger) -> str | None:
        return logger.run_id  # made when the logger was built: no request to the server here

    def close(self, logger: Logger, status: str) -> None:
        attempt(logger, logger.experiment.set_terminated, logger.run_id, ENDED[status])


class WandbSink(Sink):
    """Images and figures as wandb.Image, the final metrics in the run summary too, files as a model artifact."""

    name = "wandb"

    def image(self, logger: Logger, tag: str, image_chw: Any, step: int) -> None:
        pixels = np.ascontiguousarray(np.asarray(image_chw).transpose(1, 2, 0))
        attempt(logger, logger.log_image, tag, [pixels], step=step)

    def figure(self, logger: Logger, tag: str, figure: Figure, step: int) -> None:
        attempt(logger, logger.log_image, tag, [figure_pixels(figure)], step=step)

    def final(self, logger: Logger, params: dict[str, Any], metrics: dict[str, float], step: int) -> None:
        logger.log_metrics(metrics, step)
        attempt(logger, logger.experiment.summary.update, metrics)

    def files(self, logger: Logger, paths: Sequence[Path], folder: str) -> None:
        attempt(logger, self._artifact, logger, paths, folder)

    @staticmethod
    def _artifact(logger: WandbRun, paths: Sequence[Path], folder: str) -> None:
        import wandb

        artifact = wandb.Artifact(f"{folder}-{logger.experiment.id}", type="model")
        for path in paths:
            artifact.add_file(str(path))
        logger.experiment.log_artifact(artifact, aliases=["latest"])

    def run_id(self, logger: Logger) -> str | None:
        return logger.version

    def close(self, logger: Logger, status: str) -> None:
        super().close(logger, status)
        # wandb.finish: a later fit in this process then starts (or resumes) its own run instead of reusing this one
        attempt(logger, logger.experiment.finish, exit_code=0 if status == "success" else 1)


SINKS: dict[type, Sink] = {TensorBoardLogger: TensorBoardSink(), CSVLogger: CSVSink(), MLFlowLogger: MLflowSink(),
                           WandbLogger: WandbSink()}


def sink(logger: Logger) -> Sink:
    """The Sink of the nearest class of `logger` that has one (a subclass takes its base's); else the base Sink."""
    return next((SINKS[cls] for cls in type(logger).__mro__ if cls in SINKS), Sink())


def log_image(loggers: Iterable[Logger], tag: str, image_chw: Any, step: int) -> None:
    """A (3, H, W) uint8 image to every logger that takes images."""
    for logger in loggers:
        sink(logger).image(logger, tag, image_chw, step)


def log_figures(loggers: Iterable[Logger], figures: dict[str, Figure], step: int) -> None:
    for logger in loggers:
        for tag, figure in figures.items():
            sink(logger).figure(logger, tag, figure, step)


def log_hyperparams(loggers: Iterable[Logger], params: dict[str, Any]) -> None:
    for logger in loggers:
        sink(logger).hparams(logger, params)


def log_final(loggers: Iterable[Logger], params: dict[str, Any], metrics: dict[str, float], step: int) -> None:
    """The run's final metrics (with its hyper-parameters, where the logger shows them together)."""
    for logger in loggers:
        sink(logger).final(logger, params, metrics, step)


def log_files(loggers: Iterable[Logger], paths: Sequence[Path], folder: str) -> None:
    for logger in loggers:
        sink(logger).files(logger, paths, folder)


def close(loggers: Iterable[Logger], status: str) -> None:
    """End each logger's run: status 'success', 'failed' or 'killed' (stopped, to be resumed)."""
    if rank_zero_only.rank != 0:
        return
    for logger in loggers:
        sink(logger).close(logger, status)


class LoggerRuns(L.Callback):
    """The MLflow and W&B run ids, in every checkpoint (ckpt["callbacks"]["LoggerRuns"]), so resuming it
    continues those runs."""

    def __init__(self, loggers: Sequence[Logger]) -> None:
        self.loggers = list(loggers)

    def state_dict(self) -> dict[str, str]:
        ids = {sink(logger).name: sink(logger).run_id(logger) for logger in self.loggers}
        return {name: run_id for name, run_id in ids.items() if run_id}
