"""A fit's settings in typed sections, each setting declared once.

Each setting is a field of its section's dataclass: its default, its flag's help, type, metavar and choices,
and the check of its value (`setting(...)`). The flags (`cifar10.fit_settings`), the built-in defaults and the
value checks are generated from those fields, so a new hyper-parameter is one field here plus the code that
uses it. The sections, each handed whole to what uses it:

    model    ModelSettings    the ClassifierModule's hyper-parameters (optimisation, test-time augmentation)
    data     DataSettings     the CIFAR10DataModule's arguments
    trainer  TrainerSettings  the L.Trainer's arguments, and whether to torch.compile the network
    run      RunSettings      which model and recipe, the seed, where runs go and are logged, what to resume

A checkpoint holds each value once: the model section in the model's hyper-parameters, the data section
in the DataModule's (`save_hyperparameters`), the trainer and run sections in the RunRecord callback's
state. `Settings.flat()` is the view metrics.json and TensorBoard's HPARAMS show (HPARAMS without paths).

The models and the DataModule import this module for their sections, so it imports none of them, nor torch
or Lightning at module level: the registries' names (the flags' choices) are read when first needed.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
import typing
from collections.abc import Callable, Sequence
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from typing import Any

from cifar10.errors import UserError

DEFAULT_MODEL = "speedrun"
ENVIRONMENT = {"mlflow_uri": "MLFLOW_TRACKING_URI", "mlflow_experiment": "MLFLOW_EXPERIMENT_NAME",
               "wandb_project": "WANDB_PROJECT"}  # settings whose default the loggers' own variables give
PER_INVOCATION = ("ckpt_path", "config")  # never inherited by a resumed run
PATHS = ("data_dir", "data_url", "data_md5", "logdir", "mlflow_uri")  # where things are: not in HPARAMS
LOGGING = ("logger", "mlflow_experiment", "wandb_project", "log_checkpoints")  # where it logs, not how it trained
PRECISIONS = ("auto", "32", "16-mixed", "bf16-mixed")
ACCELERATORS = ("auto", "cpu", "gpu")  # --accelerator of fit, evaluate and the benchmarks

# The argument groups of --help, in order (None: the parser's own, first). A recipe sets the RECIPE ones.
RECIPE = "recipe settings (defaults come from --recipe)"
GROUPS = (None, RECIPE, "run", "loggers (metrics, the LR, hyper-parameters, figures)")
LOGGERS = GROUPS[3]


def names_in(module: str, attribute: str) -> Callable[[], Sequence[str]]:
    """The names a registry module lists, read when a parser or a check first needs them (see the docstring)."""
    return lambda: tuple(getattr(importlib.import_module(module), attribute))


def resolved_now(value: Any) -> Any:
    """A choices list or help text given as a function (names_in), or as itself."""
    return value() if callable(value) else value


def setting(default: Any = None, *, help: str | Callable[[], str] | None = None, group: str | None = None,
            flag: str | None = None, cli: bool = True, check: Callable[[Any], bool] | None = None,
            why: str | Callable[[], str] = "", shown: Callable[[Any], str] = str, **argparse_kwargs: Any) -> Any:
    """A settings field: its default, and its flag (`--` + flag, which defaults to the field's name) with
    `help` in the --help `group`; argparse_kwargs are add_argument's (type, metavar, choices, action, nargs).
    `check(value)` False is the problem "--flag VALUE why" (`shown` writes the value). cli=False: a setting
    without a flag (only a recipe, a program or a checkpoint sets it)."""
    metadata = {"help": help, "group": group, "flag": flag, "cli": cli, "check": check, "why": why, "shown": shown,
                "argparse": argparse_kwargs}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def shared(section: type, name: str) -> Any:
    """A field whose setting another section declares (its flag, default and check): the seed of the data."""
    source = next(f for f in fields(section) if f.name == name)
    return field(default=source.default, metadata={**source.metadata, "shared": True})


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


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


def logger_names() -> tuple[str, ...]:
    from cifar10.loggers import logger_names as names  # Lightning's loggers: imported when asked (see the docstring)
    return names()


class LoggerList(argparse.Action):
    """--logger a b or --logger a,b: known names, each once, in order."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        names = [name for value in values for name in str(value).split(",") if name]
        unknown = [name for name in names if name not in logger_names()]
        if unknown or not names:
            parser.error(f"argument --logger: unknown logger(s) {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(logger_names())}")
        setattr(namespace, self.dest, list(dict.fromkeys(names)))


FLAG = {"action": argparse.BooleanOptionalAction}  # an on/off setting: --x and --no-x
OPTIMIZERS = names_in("cifar10.optimizers", "OPTIMIZERS")
SCHEDULES = names_in("cifar10.schedules", "SCHEDULES")
TTA_MODES = names_in("cifar10.tta", "TTA_MODES")
AUGMENT_PRESETS = names_in("cifar10.data.augment", "AUGMENT_PRESETS")
NORMALIZE_PRESETS = names_in("cifar10.data.normalization", "NORMALIZE_PRESETS")
RECIPE_NAMES = names_in("cifar10.recipes", "RECIPES")


@dataclass(frozen=True)
class ModelSettings:
    """ClassifierModule's hyper-parameters that settings choose (the data adds mean, std, class names)."""

    optimizer: str = setting("sgd", group=RECIPE, choices=OPTIMIZERS)
    lr: float = setting(0.1, group=RECIPE, type=float, metavar="F", help="(peak) learning rate",
                        check=lambda v: finite(v) and v > 0, why="must be a finite number above 0")
    momentum: float = setting(0.9, group=RECIPE, type=float, metavar="F",
                              check=lambda v: finite(v) and v >= 0, why="must be a finite number >= 0")
    nesterov: bool = setting(False, group=RECIPE, **FLAG)
    weight_decay: float = setting(5e-4, group=RECIPE, type=float, metavar="F",
                                  check=lambda v: finite(v) and v >= 0, why="must be a finite number >= 0")
    betas: list[float] = setting([0.9, 0.999], group=RECIPE, cli=False)  # Adam's; only recipes set them
    schedule: str = setting("none", group=RECIPE, choices=SCHEDULES,
                            help="per step: onecycle, triangle (airbench's), cosine, linear (airbench94_muon's), none")
    label_smoothing: float = setting(0.0, group=RECIPE, type=float, metavar="F",
                                     check=lambda v: finite(v) and 0 <= v < 1, why="must be in [0, 1)")
    bias_lr_scale: float = setting(1.0, group=RECIPE, type=float, metavar="F",
                                   help="BatchNorm biases train at F x lr, with the same weight decay per step",
                                   check=lambda v: finite(v) and v > 0, why="must be above 0")
    tta: str = setting("none", group=RECIPE, choices=TTA_MODES, help="test-time augmentation for the test accuracy")
    channels_last: bool | None = setting(None, **FLAG, help="channels-last memory format (default: on; faster for "
                                         "the conv nets, see `python -m cifar10.bench layout`)")

    @classmethod
    def from_hparams(cls, hparams: dict[str, Any]) -> ModelSettings:
        """The section from a model's saved hyper-parameters (its other entries ignored; missing ones: the
        field's default, as for checkpoints written before a setting existed)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in hparams.items() if k in names})


@dataclass(frozen=True)
class RunSettings:
    """Which model and recipe, the seed (the data section has it too), where runs go and are logged
    (cifar10.loggers); and, for this invocation only, what it resumes and which --config it read."""

    model: str = setting(DEFAULT_MODEL, metavar="NAME", help=f"architecture, listed below (default {DEFAULT_MODEL})")
    recipe: str = setting("default", choices=RECIPE_NAMES, help="tutorial: the source's settings; default: ours "
                          "(default)")
    seed: int = setting(0, group="run", type=int, metavar="N", help="default 0",
                        check=lambda v: 0 <= v < 2**32, why="must be in [0, 2**32)")
    logdir: str = setting("lightning_logs", group="run", metavar="DIR",
                          help="runs go to DIR/MODEL/version_N (default lightning_logs)")
    logger: list[str] = setting(
        ["tensorboard"], group=LOGGERS, nargs="+", action=LoggerList, metavar="NAME",
        help=lambda: f"one or more of {', '.join(logger_names())}, spaced or comma-separated (default tensorboard)",
        check=lambda v: bool(v) and set(v) <= set(logger_names()),  # a checkpoint's, too
        why=lambda: f"must name one or more of {', '.join(logger_names())}", shown=lambda v: ",".join(map(str, v)))
    mlflow_uri: str | None = setting(None, group=LOGGERS, metavar="URI", help="MLflow tracking URI: http://HOST:PORT "
                                     "of `mlflow server`, or sqlite:///FILE.db (default: MLFLOW_TRACKING_URI, else "
                                     "sqlite:///LOGDIR/mlflow.db)")
    mlflow_experiment: str = setting("cifar10", group=LOGGERS, metavar="NAME",
                                     help="default: MLFLOW_EXPERIMENT_NAME, else cifar10")
    wandb_project: str = setting("cifar10", group=LOGGERS, metavar="NAME", help="default: WANDB_PROJECT, else "
                                 "cifar10 (WANDB_MODE=offline: no account, `wandb sync` later)")
    log_checkpoints: bool = setting(False, group=LOGGERS, **FLAG,
                                    help="also send best.ckpt and last.ckpt to MLflow / W&B as artifacts at the end")
    ckpt_path: str | None = setting(None, group="run", metavar="PATH|last",
                                    help="resume a checkpoint, in the run folder it is in; 'last': the unfinished run "
                                    "of --model under --logdir (refused when there are several)")
    config: str | None = setting(None, metavar="FILE.yaml", help="YAML of the same keys as these flags, used as "
                                 "defaults")


@dataclass(frozen=True)
class DataSettings:
    """CIFAR10DataModule's arguments (url and md5 None: the official archive)."""

    data_dir: str = setting("data", metavar="DIR", help="where CIFAR-10 is downloaded and extracted (default data)")
    url: str | None = setting(None, flag="data_url", metavar="URL",
                              help="archive URL, file:// works (default: the official one)")
    md5: str | None = setting(None, flag="data_md5", metavar="MD5", help="md5 of the archive at --data-url")
    batch_size: int = setting(256, group=RECIPE, type=int, metavar="N",
                              help="per process: under DDP the global batch is N x processes",
                              check=lambda v: v >= 1, why="must be at least 1")
    val_size: int | float = setting(5000, group=RECIPE, type=count_or_fraction, metavar="N|F",
                                    help="validation images: a count or a fraction of the training set",
                                    check=lambda v: not isinstance(v, (int, float)) or v >= 0, why="is negative")
    augment: str = setting("crop-flip", group=RECIPE, choices=AUGMENT_PRESETS)
    normalize: str = setting("dataset", group=RECIPE, choices=NORMALIZE_PRESETS)
    seed: int = shared(RunSettings, "seed")


DATA_SOURCE = ("data_dir", "url", "md5")  # where the images come from (the data flags evaluate takes too)


@dataclass(frozen=True)
class TrainerSettings:
    """L.Trainer's arguments, and torch.compile of the network (how the run executes, not what it learns)."""

    accelerator: str = setting("auto", choices=ACCELERATORS, help="default auto")
    devices: int | str = setting("auto", type=device_count, metavar="N",
                                 help="devices per machine (default 1; auto: every device here, also the default "
                                 "with --strategy or --num-nodes)",
                                 check=lambda v: v == "auto" or v >= 1, why="must be at least 1 (or auto)")
    num_nodes: int = setting(1, type=int, metavar="N", help="machines, for multi-node DDP (default 1)",
                             check=lambda v: v >= 1, why="must be at least 1")
    strategy: str = setting("auto", metavar="S", help="Lightning strategy, e.g. ddp (default auto: one device, no DDP)")
    precision: str = setting("auto", choices=PRECISIONS, help="auto (default): bf16-mixed on a GPU that computes in "
                             "bf16 (compute capability 8.0 or later), else 32")
    max_epochs: int = setting(30, group=RECIPE, type=int, metavar="N", check=lambda v: v >= 1, why="must be at least 1")
    limit_train_batches: int | float = setting(
        1.0, group="run", type=count_or_fraction, metavar="N|F",
        check=lambda v: v >= 1 if isinstance(v, int) else 0 < v <= 1,
        why="must be a count >= 1 or a fraction in (0, 1]")
    deterministic: bool = setting(False, **FLAG, help="deterministic algorithms (always on with the CPU)")
    compile: bool = setting(False, **FLAG, help="torch.compile the network")

    def trainer_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of L.Trainer; deterministic is always on with the CPU (exact resume), and
        cudnn.benchmark (the fastest convolution algorithms for the batch's shape, as airbench) on a GPU
        unless --deterministic."""
        kwargs = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "compile"}
        cuda = uses_cuda(self.accelerator)
        if kwargs["limit_train_batches"] == 1.0 and isinstance(kwargs["limit_train_batches"], float):  # (1 is 1 batch)
            # all batches, Lightning's default: given explicitly, it prints a line saying so
            del kwargs["limit_train_batches"]
        # compiled: evaluate under no_grad, as fit's validation does; the final test's inference mode would be
        # a third grad state, so a third compilation of the network
        return kwargs | {"deterministic": self.deterministic or not cuda, "benchmark": cuda and not self.deterministic,
                         "inference_mode": not self.compile}


SECTIONS = {"model": ModelSettings, "data": DataSettings, "trainer": TrainerSettings, "run": RunSettings}
FLAG_ORDER = ("run", "data", "trainer", "model")  # the sections' flags in --help: which model first, its knobs last


def flag_of(f: Field) -> str:
    """A field's flag name (dest): its own name unless it says another."""
    return f.metadata.get("flag") or f.name


def flag_names(section: str) -> dict[str, str]:
    """field name -> flag name (dest) of a section."""
    return {f.name: flag_of(f) for f in fields(SECTIONS[section])}


def declared(order: Sequence[str] = tuple(SECTIONS)) -> list[Field]:
    """Every setting once, by section (a field another section declares, the data's seed, left out)."""
    return [f for name in order for f in fields(SECTIONS[name]) if not f.metadata.get("shared")]


def default_of(f: Field) -> Any:
    return f.default_factory() if f.default is MISSING else f.default


def defaults() -> dict[str, Any]:
    """The built-in layer: every setting's default, by flag name (--config has none: it is not a setting)."""
    return {flag_of(f): default_of(f) for f in declared() if f.name != "config"}


RECIPE_KEYS = tuple(flag_of(f) for f in declared() if f.metadata.get("group") == RECIPE)  # what a recipe may set


def problems(values: dict[str, Any]) -> list[str]:
    """What is wrong with the flag-named values given (the fields' checks and choices), one line each."""
    found = []
    for f in declared():
        key, meta = flag_of(f), f.metadata
        if key not in values:
            continue
        value, flag = values[key], "--" + key.replace("_", "-")
        choices = resolved_now(meta["argparse"].get("choices"))
        if choices is not None and value not in choices:
            found.append(f"{flag} {value} must be one of {', '.join(choices)}")
        elif meta["check"] is not None and not meta["check"](value):
            found.append(f"{flag} {meta['shown'](value)} {resolved_now(meta['why'])}")
    return found


PLAIN = {float: float, bool: bool, bool | None: bool, str: str, list[float]: lambda v: [float(x) for x in v]}


def plain_values(section: Any) -> dict[str, Any]:
    """A section's values as plain floats, bools, strings and lists of them, by its fields' types (a model's
    saved hyper-parameters: what torch.load(weights_only=True) and yaml.safe_load read back); a type not
    listed in PLAIN as it is."""
    hints = typing.get_type_hints(type(section))
    return {f.name: PLAIN.get(hints[f.name], lambda v: v)(getattr(section, f.name)) for f in fields(section)}


@dataclass(frozen=True)
class Settings:
    model: ModelSettings
    data: DataSettings
    trainer: TrainerSettings
    run: RunSettings

    @classmethod
    def from_flat(cls, flat: dict[str, Any]) -> Settings:
        """Sections from flag-named values (the seed goes to both data and run)."""
        return cls(**{name: section(**{field: flat[flag] for field, flag in flag_names(name).items() if flag in flat})
                      for name, section in SECTIONS.items()})

    def flat(self) -> dict[str, Any]:
        """Every setting under its flag name: what metrics.json records."""
        return {flag: getattr(getattr(self, name), field)
                for name in SECTIONS for field, flag in flag_names(name).items()}

    def run_record(self) -> dict[str, Any]:
        """The run and trainer sections, flag-named, without per-invocation flags (what RunRecord saves)."""
        values = asdict(self.trainer) | asdict(self.run)
        return {k: v for k, v in values.items() if k not in PER_INVOCATION}

    def hparams_view(self) -> dict[str, Any]:
        """What TensorBoard's HPARAMS tab shows (and every logger gets): how the run trained, without paths,
        logging settings or per-invocation flags."""
        return {k: v for k, v in self.flat().items() if k not in PER_INVOCATION + PATHS + LOGGING}


# --- the command line -------------------------------------------------------------------------------------

def add_flag(container: Any, f: Field, **overrides: Any) -> argparse.Action:
    """The flag of settings field `f` on a parser or argument group (overrides: add_argument's, e.g. help)."""
    meta = f.metadata
    kwargs = {k: resolved_now(v) if k == "choices" else v for k, v in meta["argparse"].items()}
    if meta["help"] is not None:
        kwargs["help"] = resolved_now(meta["help"])
    return container.add_argument("--" + flag_of(f).replace("_", "-"), **kwargs | overrides)


def add_data_source_flags(parser: argparse.ArgumentParser, **helps: str) -> None:
    """--data-dir, --data-url, --data-md5 as fit has them, on another command's parser (helps: by field name,
    where that command says more)."""
    for f in fields(DataSettings):
        if f.name in DATA_SOURCE:
            add_flag(parser, f, **({"help": helps[f.name]} if f.name in helps else {}))


# --- layering and checking ----------------------------------------------------------------------------------

def check_values(s: dict[str, Any]) -> None:
    """Reject values that would run and 'succeed' meaninglessly, before any folder is made (each field's own
    check and choices)."""
    wrong = problems(s)
    if wrong:
        raise UserError("; ".join(wrong) + ". Nothing was run and no run folder was made: fix the value (flag, "
                        "--config file or recipe) and run again.")


def check_accelerator(accelerator: str) -> None:
    """--accelerator gpu without a GPU PyTorch can see is a clear error (fit, evaluate, bench)."""
    import torch
    if accelerator == "gpu" and not torch.cuda.is_available():
        raise UserError(f"--accelerator gpu needs CUDA, which this PyTorch ({torch.__version__}) cannot see "
                        "here. Use --accelerator cpu (or auto), or run on a machine with an NVIDIA GPU.")


def uses_cuda(accelerator: str) -> bool:
    import torch
    return accelerator in ("gpu", "auto") and torch.cuda.is_available()


def resolve_auto(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings left on 'auto' become what is fastest here: bf16 autocast on a GPU, channels-last everywhere."""
    from lightning.pytorch.utilities import rank_zero_only

    from cifar10.gpu import native_bf16
    s = dict(settings)
    if s["precision"] == "auto":
        s["precision"] = "bf16-mixed" if uses_cuda(s["accelerator"]) and native_bf16() else "32"
    elif s["precision"] == "16-mixed" and not uses_cuda(s["accelerator"]):  # what Lightning runs instead: a true record
        rank_zero_only(print)("--precision 16-mixed needs a GPU; on the CPU this run uses bf16-mixed.", file=sys.stderr)
        s["precision"] = "bf16-mixed"
    if s["channels_last"] is None:
        s["channels_last"] = True
    s["devices"] = resolve_devices(s["devices"], s["strategy"], s["num_nodes"])
    return s


def resolve_devices(devices: int | str, strategy: str, num_nodes: int) -> int | str:
    """'auto' devices is one, unless a strategy or several machines ask for DDP.

    Lightning's own 'auto' is every GPU of the machine: on a multi-GPU host a plain fit would become a
    DDP run nobody asked for (N times the global batch), and its launcher re-runs sys.argv once per rank,
    which hangs in-process callers such as pytest and the benchmarks.
    """
    if devices == "auto" and strategy == "auto" and num_nodes == 1:
        return 1
    return devices
