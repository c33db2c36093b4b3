"""`python -m cifar10.fit`: train one model with a recipe, log to TensorBoard, test the best checkpoint.

Settings are layered, later layers winning: built-in defaults, the model's recipe, the settings a
resumed checkpoint was trained with, `--config FILE.yaml`, explicit flags.
"""

import signal
import sys


def exit_on_signal(signum: int, frame: object) -> None:
    """Outside training (start-up, download, set-up), SIGINT and SIGTERM end the command quietly."""
    print(f"\n{signal.Signals(signum).name}: stopped outside training, so there was nothing to save.", file=sys.stderr)
    raise SystemExit(128 + signum)


if __name__ == "__main__":  # before the heavy imports below: a signal while they load ends quietly too
    for _signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(_signum, exit_on_signal)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import inspect  # noqa: E402
import math  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import lightning as L  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from lightning.fabric.utilities.exceptions import MisconfigurationException  # noqa: E402
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint  # noqa: E402
from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402
from lightning.pytorch.utilities import rank_zero_only  # noqa: E402

from cifar10 import reporting, runs  # noqa: E402
from cifar10.callbacks import AugmentedImages, BatchSeed, ProgressBar, RunSettings, Throughput  # noqa: E402
from cifar10.data import AUGMENT_PRESETS, NORMALIZE_PRESETS, CIFAR10DataModule  # noqa: E402
from cifar10.errors import CliParser, UserError, exits_cleanly  # noqa: E402
from cifar10.files import AtomicCheckpointIO  # noqa: E402
from cifar10.models import create_model, model_info, model_names, recipe  # noqa: E402
from cifar10.models.base import OPTIMIZERS, SCHEDULES, TTA_MODES, ClassifierModule  # noqa: E402
from cifar10.recipes import RECIPES  # noqa: E402
from cifar10.stopping import FiniteLoss, NonFiniteLoss, StopOnSignal, StopRequested, preserved_handlers  # noqa: E402

DEFAULT_MODEL = "speedrun"
DEFAULTS: dict[str, Any] = {  # what no recipe decides
    "recipe": "default", "data_dir": "data", "data_url": None, "data_md5": None,
    "accelerator": "auto", "devices": "auto", "num_nodes": 1, "strategy": "auto", "precision": "auto",
    "channels_last": None, "compile": False, "deterministic": False, "seed": 0, "limit_train_batches": 1.0,
    "logdir": "lightning_logs",
}
PER_INVOCATION = ("ckpt_path", "config")  # never inherited by a resumed run
PATHS = ("data_dir", "data_url", "data_md5", "logdir")  # where things are, not how the run trained: not in HPARAMS
PRECISIONS = ("auto", "32", "16-mixed", "bf16-mixed")
ACCELERATORS = ("auto", "cpu", "gpu")


def count_or_fraction(text: str) -> int | float:
    """'5000' -> 5000 (a count), '0.1' -> 0.1 (a fraction)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    raise argparse.ArgumentTypeError(f"expected an integer count or a float fraction, got {text!r}")


def device_count(text: str) -> int | str:
    if text == "auto" or text.isdigit():
        return text if text == "auto" else int(text)
    raise argparse.ArgumentTypeError(f"expected a number of devices or 'auto', got {text!r}")


def models_epilog() -> str:
    width = max(map(len, model_names()))
    lines = [f"  {name:<{width}}  {model_info(name).published}" for name in model_names()]
    return "models (--model NAME) and their published accuracy:\n" + "\n".join(lines)


def recording(container: Any, actions: list[argparse.Action]):
    """`container.add_argument` (a parser or an argument group) that also appends the Action it returns to `actions`."""
    def add(*args: Any, **kwargs: Any) -> argparse.Action:
        action = container.add_argument(*args, **kwargs)
        actions.append(action)
        return action
    return add


def build_parser() -> argparse.ArgumentParser:
    """Every flag defaults to 'not given' (SUPPRESS), so the layers below them stay visible."""
    parser = CliParser(prog="python -m cifar10.fit", hint="every flag and model",
                       description="Train a CIFAR-10 classifier.", epilog=models_epilog(),
                       formatter_class=argparse.RawDescriptionHelpFormatter, argument_default=argparse.SUPPRESS)
    parser.flags = []  # every flag's Action, for --config (argparse lists them only privately)
    add = recording(parser, parser.flags)
    add("--model", metavar="NAME", help=f"architecture, listed below (default {DEFAULT_MODEL})")
    add("--recipe", choices=RECIPES, help="tutorial: the source's settings; default: ours (default)")
    add("--config", metavar="FILE.yaml", help="YAML of the same keys as these flags, used as defaults")
    add("--data-dir", metavar="DIR", help="where CIFAR-10 is downloaded and extracted (default data)")
    add("--data-url", metavar="URL", help="archive URL, file:// works (default: the official one)")
    add("--data-md5", metavar="MD5", help="md5 of the archive at --data-url")
    add("--accelerator", choices=ACCELERATORS, help="default auto")
    add("--devices", type=device_count, metavar="N", help="devices per machine (default auto)")
    add("--num-nodes", type=int, metavar="N", help="machines, for multi-node DDP (default 1)")
    add("--strategy", metavar="S", help="Lightning strategy, e.g. ddp (default auto)")
    add("--precision", choices=PRECISIONS, help="auto (default): bf16-mixed on a GPU that has bf16, else 32")
    add("--channels-last", action=argparse.BooleanOptionalAction,
        help="channels-last memory format (default: on; faster for the conv nets, see `python -m cifar10.bench layout`)")
    add("--compile", action=argparse.BooleanOptionalAction, help="torch.compile the network")
    add("--deterministic", action=argparse.BooleanOptionalAction,
        help="deterministic algorithms (always on with the CPU)")
    group = recording(parser.add_argument_group("recipe settings (defaults come from --recipe)"), parser.flags)
    group("--max-epochs", type=int, metavar="N")
    group("--batch-size", type=int, metavar="N",
                       help="per process: under DDP the global batch is N x processes")
    group("--lr", type=float, metavar="F", help="(peak) learning rate")
    group("--optimizer", choices=OPTIMIZERS)
    group("--momentum", type=float, metavar="F")
    group("--nesterov", action=argparse.BooleanOptionalAction)
    group("--weight-decay", type=float, metavar="F")
    group("--label-smoothing", type=float, metavar="F")
    group("--schedule", choices=SCHEDULES, help="per step: onecycle, triangle (airbench's), cosine, none")
    group("--bias-lr-scale", type=float, metavar="F",
                       help="BatchNorm biases train at F x lr, with the same weight decay per step")
    group("--tta", choices=TTA_MODES, help="test-time augmentation for the test accuracy")
    group("--augment", choices=AUGMENT_PRESETS)
    group("--normalize", choices=NORMALIZE_PRESETS)
    group("--val-size", type=count_or_fraction, metavar="N|F",
                       help="validation images: a count or a fraction of the training set")
    group = recording(parser.add_argument_group("run"), parser.flags)
    group("--seed", type=int, metavar="N", help="default 0")
    group("--ckpt-path", metavar="PATH|last",
                       help="resume a checkpoint; 'last': the newest run of --model under --logdir")
    group("--limit-train-batches", type=count_or_fraction, metavar="N|F")
    group("--logdir", metavar="DIR", help="runs go to DIR/MODEL/version_N (default lightning_logs)")
    return parser


def config_tokens(path: Path, parser: argparse.ArgumentParser) -> list[str]:
    """Turn a YAML config into flags, so argparse checks its values exactly like the command line's."""
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise UserError(f"cannot read --config {path}: {err.strerror}. Pass an existing YAML file.") from None
    except yaml.YAMLError as err:
        raise UserError(f"--config {path} is not valid YAML: {err}") from None
    if not isinstance(config, dict):
        raise UserError(f"--config {path} must be a mapping of flag names to values, like `lr: 0.05`.")
    actions = {a.dest: a for a in parser.flags if a.dest != "config"}
    unknown = [str(key) for key in config if str(key).replace("-", "_") not in actions]
    if unknown:
        raise UserError(f"--config {path} has unknown key(s): {', '.join(unknown)}. Known keys: "
                        f"{', '.join(sorted(actions))} (dashes or underscores).")
    tokens = []
    for key, value in config.items():
        action = actions[str(key).replace("-", "_")]
        flag = action.option_strings[0]
        if value is None:
            continue
        if isinstance(action, argparse.BooleanOptionalAction):
            if not isinstance(value, bool):
                raise UserError(f"--config {path}: {key} must be true or false, not {value!r}.")
            tokens.append(flag if value else "--no-" + flag[2:])
        else:
            tokens.append(f"{flag}={value}")
    return tokens


def given_settings(argv: Sequence[str]) -> dict[str, Any]:
    """The settings the command line and its --config file name, and nothing else."""
    parser = build_parser()
    given = vars(parser.parse_args(argv))
    if "config" in given:
        given = vars(parser.parse_args(config_tokens(Path(given["config"]), parser) + list(argv)))
    return given


def check_model(name: str) -> None:
    if name not in model_names():
        raise UserError(f"unknown model {name!r}. Choose one of: {', '.join(model_names())}.")


def resolve_settings(given: dict[str, Any]) -> tuple[dict[str, Any], runs.ResumePoint | None]:
    """Layer defaults, recipe, the resumed run's settings and the given ones; find the resume point."""
    model = given.get("model")
    if model is not None:
        check_model(model)
    resume = None
    if "ckpt_path" in given:
        ckpt, logdir = given["ckpt_path"], Path(given.get("logdir", DEFAULTS["logdir"]))
        resume = runs.resume_point(ckpt, logdir, model or (DEFAULT_MODEL if ckpt == "last" else None))
        model = resume.model
    model = model or DEFAULT_MODEL
    check_model(model)
    saved = {k: v for k, v in resume.settings.items() if k not in PER_INVOCATION} if resume else {}
    layers = [DEFAULTS, recipe(model, saved.get("recipe", "default")), saved]
    if "recipe" in given:
        layers.append(recipe(model, given["recipe"]))
    settings = {k: v for layer in layers for k, v in layer.items()} | given | {"model": model}
    settings.setdefault("ckpt_path", None)
    check_values(settings)
    return settings, resume


def check_values(s: dict[str, Any]) -> None:
    """Reject values that would run and 'succeed' meaninglessly, before any folder is made."""
    def finite(key: str) -> bool:
        return isinstance(s[key], (int, float)) and math.isfinite(s[key])

    limit = s["limit_train_batches"]
    problems = [
        (finite("lr") and s["lr"] > 0, f"--lr {s['lr']} must be a finite number above 0"),
        (s["batch_size"] >= 1, f"--batch-size {s['batch_size']} must be at least 1"),
        (s["max_epochs"] >= 1, f"--max-epochs {s['max_epochs']} must be at least 1"),
        (finite("momentum") and s["momentum"] >= 0, f"--momentum {s['momentum']} must be a finite number >= 0"),
        (finite("weight_decay") and s["weight_decay"] >= 0,
         f"--weight-decay {s['weight_decay']} must be a finite number >= 0"),
        (finite("label_smoothing") and 0 <= s["label_smoothing"] < 1,
         f"--label-smoothing {s['label_smoothing']} must be in [0, 1)"),
        (finite("bias_lr_scale") and s["bias_lr_scale"] > 0, f"--bias-lr-scale {s['bias_lr_scale']} must be above 0"),
        (limit >= 1 if isinstance(limit, int) else 0 < limit <= 1,
         f"--limit-train-batches {limit} must be a count >= 1 or a fraction in (0, 1]"),
        (not isinstance(s["val_size"], (int, float)) or s["val_size"] >= 0, f"--val-size {s['val_size']} is negative"),
        (0 <= s["seed"] < 2**32, f"--seed {s['seed']} must be in [0, 2**32)"),
        (s["num_nodes"] >= 1, f"--num-nodes {s['num_nodes']} must be at least 1"),
        (s["devices"] == "auto" or s["devices"] >= 1, f"--devices {s['devices']} must be at least 1 (or auto)"),
    ]
    wrong = [why for ok, why in problems if not ok]
    if wrong:
        raise UserError("; ".join(wrong) + ". Nothing was run and no run folder was made: fix the value (flag, "
                        "--config file or recipe) and run again.")


def check_accelerator(accelerator: str) -> None:
    if accelerator == "gpu" and not torch.cuda.is_available():
        raise UserError(f"--accelerator gpu needs CUDA, which this PyTorch ({torch.__version__}) cannot see "
                        "here. Use --accelerator cpu (or auto), or run on a machine with an NVIDIA GPU.")


def is_deterministic(settings: dict[str, Any]) -> bool:
    """On by request, and always on the CPU so a resumed run matches an uninterrupted one."""
    return bool(settings["deterministic"]) or not uses_cuda(settings)


def uses_cuda(settings: dict[str, Any]) -> bool:
    return settings["accelerator"] in ("gpu", "auto") and torch.cuda.is_available()


def resolve_auto(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings left on 'auto' become what is fastest here: bf16 autocast on a GPU, channels-last everywhere."""
    s = dict(settings)
    if s["precision"] == "auto":
        s["precision"] = "bf16-mixed" if uses_cuda(s) and torch.cuda.is_bf16_supported() else "32"
    elif s["precision"] == "16-mixed" and not uses_cuda(s):  # what Lightning runs instead, so the record is true
        rank_zero_only(print)("--precision 16-mixed needs a GPU; on the CPU this run uses bf16-mixed.", file=sys.stderr)
        s["precision"] = "bf16-mixed"
    if s["channels_last"] is None:
        s["channels_last"] = True
    return s


def make_datamodule(s: dict[str, Any]) -> CIFAR10DataModule:
    source = {k: v for k, v in (("url", s["data_url"]), ("md5", s["data_md5"])) if v is not None}
    return CIFAR10DataModule(data_dir=s["data_dir"], batch_size=s["batch_size"], val_size=s["val_size"],
                             augment=s["augment"], normalize=s["normalize"], seed=s["seed"], **source)


def make_model(s: dict[str, Any], dm: CIFAR10DataModule) -> ClassifierModule:
    cls = model_info(s["model"]).cls
    accepted = set(inspect.signature(cls).parameters) | set(inspect.signature(ClassifierModule).parameters)
    hparams = {k: v for k, v in s.items() if k in accepted}
    model = create_model(s["model"], **hparams, mean=tuple(dm.mean), std=tuple(dm.std),
                         class_names=list(dm.class_names))
    if s["compile"]:
        model.net.compile()  # in place: checkpoint keys stay free of "_orig_mod."
    return model


def make_logger(s: dict[str, Any], resume: runs.ResumePoint | None) -> TensorBoardLogger:
    if resume and resume.run_dir:  # continue in the run folder the checkpoint came from
        run = resume.run_dir
        return TensorBoardLogger(save_dir=run.parent.parent, name=run.parent.name, version=resume.version,
                                 default_hp_metric=False)
    version = runs.claim_version(Path(s["logdir"]), s["model"], rank_zero_only.rank)
    return TensorBoardLogger(save_dir=s["logdir"], name=s["model"], version=version, default_hp_metric=False)


def make_trainer(s: dict[str, Any], logger: TensorBoardLogger, callbacks: list[L.Callback], **overrides: Any) -> L.Trainer:
    try:
        return L.Trainer(**{
            "accelerator": s["accelerator"], "devices": s["devices"], "num_nodes": s["num_nodes"],
            "strategy": s["strategy"], "precision": s["precision"], "max_epochs": s["max_epochs"],
            "limit_train_batches": s["limit_train_batches"], "deterministic": is_deterministic(s), "logger": logger,
            "callbacks": callbacks, "default_root_dir": s["logdir"],
            "plugins": [AtomicCheckpointIO()],  # same-folder temp file + rename: a kill never damages a checkpoint
            "use_distributed_sampler": False,  # the DataModule shards the data itself under DDP
            **overrides})
    except (MisconfigurationException, ValueError) as err:
        raise UserError(f"Lightning rejected these settings: {err} Check --accelerator, --devices, --strategy "
                        "and --precision.") from None


def checkpoint_callbacks(folder: Path) -> tuple[ModelCheckpoint, ModelCheckpoint]:
    """best.ckpt (best val/acc) and last.ckpt (every epoch's end, for resuming).

    last.ckpt is a checkpoint of its own without a monitor: ModelCheckpoint's save_last writes it only
    at the epochs that also write a best checkpoint (Lightning 2.6), which would resume from the past.
    """
    best = ModelCheckpoint(dirpath=folder, filename="best", monitor="val/acc", mode="max", save_top_k=1,
                           auto_insert_metric_name=False, enable_version_counter=False)
    last = ModelCheckpoint(dirpath=folder, filename="last", monitor=None, save_top_k=1,
                           auto_insert_metric_name=False, enable_version_counter=False)
    return best, last


def log_interval(dm: CIFAR10DataModule, batch_size: int) -> int:
    """Steps between logged values: a few times an epoch even on tiny data, at most 50."""
    steps_per_epoch = -(-len(dm.train_labels) // batch_size)
    return max(1, min(50, steps_per_epoch // 4))


class StoppedAtOnce(Exception):
    """A second Ctrl-C: Lightning stopped wherever it was (it raises SystemExit for KeyboardInterrupt)."""


def lightning_call(trainer: L.Trainer, stop: StopOnSignal, method: str, *args: Any, **kwargs: Any) -> None:
    """trainer.fit or trainer.test with `stop` handling SIGINT and SIGTERM; the handlers before are put back."""
    try:
        with preserved_handlers():
            stop.install()
            getattr(trainer, method)(*args, **kwargs)
    except SystemExit:  # Lightning's answer to KeyboardInterrupt, and to SIGTERM in its set-up
        if not trainer.interrupted:
            raise
        if stop.requested == signal.SIGTERM:
            raise StopRequested(signal.SIGTERM, None) from None
        raise StoppedAtOnce() from None


def device_name(trainer: L.Trainer) -> str:
    device = trainer.strategy.root_device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    return f"{device.type} x{trainer.num_devices} ({name})"


def percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.2f}%"


def summary(metrics: dict[str, Any]) -> str:
    rows = [["model", metrics["model"]], ["parameters", f"{metrics['params']:,}"], ["epochs", metrics["epochs"]],
            ["wall time", f"{metrics['wall_time_s']:.1f} s"], ["images/s", f"{metrics['train_images_per_s']:,.0f}"],
            ["best validation accuracy", percent(metrics["best_val_acc"])],
            ["test accuracy", percent(metrics["test_acc"])]]
    classes = [[name, percent(acc)] for name, acc in metrics["per_class_acc"].items()]
    return reporting.format_table(["", ""], rows) + "\n\n" + reporting.format_table(["class", "test accuracy"],
                                                                                    classes)


def log_report(logger: TensorBoardLogger, step: int, settings: dict[str, Any], metrics: dict[str, Any],
               results: dict[str, Any], class_names: list[str]) -> None:
    """Test figures and the hyper-parameters with their final metrics (the HPARAMS tab)."""
    experiment = logger.experiment
    experiment.add_figure("test/per_class_accuracy",
                          reporting.per_class_accuracy_figure(metrics["per_class_acc"]), global_step=step)
    experiment.add_figure("test/confusion_matrix",
                          reporting.confusion_matrix_figure(results["confusion"], class_names), global_step=step)
    wrong = results["misclassified"]
    experiment.add_figure("test/misclassified", reporting.misclassified_figure(
        wrong["images"], wrong["preds"], wrong["targets"], class_names), global_step=step)
    params = {k: v for k, v in settings.items() if k not in PER_INVOCATION + PATHS} | {"params": metrics["params"]}
    logger.log_hyperparams(params, metrics={"hp/test_acc": metrics["test_acc"],
                                            "hp/best_val_acc": metrics["best_val_acc"] or 0.0})
    logger.finalize("success")


def fit(settings: dict[str, Any], resume: runs.ResumePoint | None, extra_callbacks: Sequence[L.Callback]) -> int:
    check_accelerator(settings["accelerator"])
    s = resolve_auto(settings)
    L.seed_everything(s["seed"], workers=True)
    if resume:  # the run folder's checkpoints are expected there
        warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
        # the DataModule resumes a mid-epoch checkpoint itself (it skips the batches done; see its state_dict)
        warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch")
    logger = make_logger(s, resume)
    run_dir = Path(logger.log_dir)
    try:
        with runs.version_shared_with_children(logger.version):
            return train_and_test(s, resume, extra_callbacks, logger, run_dir)
    except NonFiniteLoss as err:
        if rank_zero_only.rank == 0:
            runs.write_metrics(run_dir, {"model": s["model"], "status": "failed", "error": str(err), "settings": s})
            logger.finalize("failed")
        raise UserError(f"{err} Run folder: {run_dir} (metrics.json says status: failed).") from None
    except StopRequested as stop:
        return stopped(s, stop, run_dir)
    except StoppedAtOnce:
        last = run_dir / "checkpoints" / "last.ckpt"
        kept = f"{last} is the one saved last before it" if last.is_file() else "no checkpoint was saved"
        print(f"\nStopped at once (second Ctrl-C); {kept}.", file=sys.stderr)
        return 130
    finally:  # stopped or failed before anything was written (bad settings, no data, an early signal)
        with contextlib.suppress(OSError):
            run_dir.rmdir()  # removes the claimed folder only while it is still empty


@dataclass(frozen=True)
class FitCallbacks:
    """A fit's callbacks, in order, with the ones whose state the command reads afterwards by name."""

    stop: StopOnSignal
    best: ModelCheckpoint
    throughput: Throughput
    all: list[L.Callback]


def fit_callbacks(s: dict[str, Any], run_dir: Path, extra: Sequence[L.Callback] = ()) -> FitCallbacks:
    best, last = checkpoint_callbacks(run_dir / "checkpoints")
    throughput, stop = Throughput(), StopOnSignal(run_dir / "checkpoints" / "last.ckpt")
    return FitCallbacks(stop, best, throughput, [
        stop,  # first: it stops at a batch's start, before the other callbacks' per-batch work
        best, last, LearningRateMonitor(logging_interval="step"), BatchSeed(s["seed"]), throughput, AugmentedImages(),
        FiniteLoss(), RunSettings({k: v for k, v in s.items() if k not in PER_INVOCATION}),
        ProgressBar(), *extra])


def build_run(s: dict[str, Any], logger: TensorBoardLogger, run_dir: Path, extra_callbacks: Sequence[L.Callback] = (),
              **trainer_overrides: Any) -> tuple[L.Trainer, CIFAR10DataModule, ClassifierModule, FitCallbacks]:
    """Trainer, DataModule (data read), model and callbacks of a fit from resolved settings; what `fit`
    runs, and what the benchmarks time. `trainer_overrides` go to L.Trainer (benchmarks shorten runs)."""
    callbacks = fit_callbacks(s, run_dir, extra_callbacks)
    trainer = make_trainer(s, logger, callbacks.all, **trainer_overrides)  # before the download: bad settings fail fast
    dm = make_datamodule(s)
    dm.prepare_data()
    dm.setup("fit")  # mean/std of the training split go into the model's hyper-parameters
    trainer.log_every_n_steps = log_interval(dm, s["batch_size"])
    return trainer, dm, make_model(s, dm), callbacks


def train_and_test(s: dict[str, Any], resume: runs.ResumePoint | None, extra_callbacks: Sequence[L.Callback],
                   logger: TensorBoardLogger, run_dir: Path) -> int:
    trainer, dm, model, callbacks = build_run(s, logger, run_dir, extra_callbacks)
    stop, best, throughput = callbacks.stop, callbacks.best, callbacks.throughput
    rank_zero_only(print)(f"run folder: {run_dir}" + (f" (resuming {resume.ckpt})" if resume else ""))
    lightning_call(trainer, stop, "fit", model, datamodule=dm, ckpt_path=resume.ckpt if resume else None)
    wall_time = throughput.wall_s  # of the whole run, earlier sessions included when resumed
    if stop.requested is not None:  # during the last validation: training is complete and saved
        raise StopRequested(stop.requested, None)

    # the best checkpoint by val/acc, unless validation ran on the test split: then the final weights
    tested = best.best_model_path if dm.val_images is not None else ""
    lightning_call(trainer, stop, "test", model, datamodule=dm, ckpt_path=tested or None)
    results = model.test_results
    metrics = {
        "model": s["model"], "params": sum(p.numel() for p in model.parameters()),
        "epochs": trainer.current_epoch, "wall_time_s": round(wall_time, 2),
        "train_images_per_s": round(throughput.images_per_s, 1), "train_time_s": round(throughput.seconds, 2),
        "best_val_acc": None if best.best_model_score is None else float(best.best_model_score),
        "test_acc": float(results["acc"]), "per_class_acc": results["per_class_acc"],
        "recipe": s["recipe"], "seed": s["seed"], "precision": s["precision"], "device": device_name(trainer),
        "best_ckpt": best.best_model_path, "tested": tested or "final weights",
        "resumed_from": str(resume.ckpt) if resume else None, "status": "finished", "settings": s,
    }
    if trainer.is_global_zero:
        log_report(logger, trainer.global_step, s, metrics, results, list(dm.class_names))
        runs.write_metrics(run_dir, metrics)
        print("\n" + summary(metrics) + f"\n\nrun folder: {run_dir}")
    return 0


def stopped(s: dict[str, Any], stop: StopRequested, run_dir: Path) -> int:
    """The message after a stop on request, and its exit code (130 for SIGINT, 143 for SIGTERM)."""
    last = run_dir / "checkpoints" / "last.ckpt"
    resume = f"python -m cifar10.fit --model {s['model']} --logdir {s['logdir']} --ckpt-path last"
    if stop.saved:
        what = f"saved {stop.saved} after the step in flight"
    elif last.is_file():
        what = f"training is saved in {last}; the run stopped before its final test"
    else:
        what = f"stopped before the first training step; nothing saved in {run_dir}"
    rank_zero_only(print)(f"\nStopped ({stop}): {what}.\nResume with: {resume}   (or --ckpt-path {last})",
                          file=sys.stderr)
    return stop.exit_code


@exits_cleanly
def main(argv: Sequence[str] | None = None, *, callbacks: Sequence[L.Callback] = ()) -> int:
    """The fit CLI; `callbacks` are extra Lightning callbacks (tests use them)."""
    settings, resume = resolve_settings(given_settings(sys.argv[1:] if argv is None else argv))
    try:
        return fit(settings, resume, callbacks)
    except MisconfigurationException as err:  # raised later than Trainer(...), e.g. by fit's set-up
        raise UserError(f"Lightning rejected these settings: {err}") from None
    except KeyboardInterrupt:  # outside trainer.fit and test, e.g. while downloading
        print("\nInterrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    code = main()
    for _signum in (signal.SIGINT, signal.SIGTERM):  # the work is done: a late signal must not kill the
        signal.signal(_signum, signal.SIG_IGN)       # interpreter mid-shutdown with another exit code
    sys.exit(code)
