"""The settings of one fit from its command line: the flags (generated from the settings' fields), `--config`,
the layers and the checks of a resume.

Layers, later ones winning: built-in defaults, the loggers' own environment variables (MLFLOW_TRACKING_URI,
MLFLOW_EXPERIMENT_NAME, WANDB_PROJECT), the model's recipe, the settings a resumed checkpoint was trained with
(not its paths, URL and md5: a checkpoint chooses none of them), `--config FILE.yaml`, explicit flags. A resume
that changes a setting the run cannot continue with is refused (`check_resume`). The layers are flat dicts of
flag names (a recipe is one), checked once, then split into the sections of `cifar10.settings`.

Apart from `cifar10.settings`, which the models and the DataModule import for their sections: this module needs
the model registry (the models' recipes, --help's list of models) and the run folders (what a resume continues).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from cifar10 import runs
from cifar10.errors import CliParser, UserError
from cifar10.models import model_info, model_names, recipe
from cifar10.settings import (DEFAULT_MODEL, ENVIRONMENT, FLAG_ORDER, GROUPS, PATHS, PER_INVOCATION, RECIPE_KEYS,
                              Settings, add_flag, check_values, declared, defaults, flag_names, resolve_auto)


def recipe_settings(model: str, name: str = "default") -> dict[str, Any]:
    """Every setting a recipe may set, as recipe `name` of `model` sets it: its own values over the defaults
    (the layer --recipe NAME puts over a resumed run's settings)."""
    return {k: v for k, v in defaults().items() if k in RECIPE_KEYS} | recipe(model, name)


def recorded_settings(resume: runs.ResumePoint) -> dict[str, Any]:
    """The flag-named settings a checkpoint was trained with, from the three places that hold them."""
    model = {k: v for k, v in resume.model_hparams.items() if k in flag_names("model")}
    data = {flag_names("data")[k]: v for k, v in resume.data_hparams.items() if k in flag_names("data")}
    return {k: v for k, v in (model | data | resume.run_record).items() if k not in PER_INVOCATION}


def saved_layer(resume: runs.ResumePoint) -> dict[str, Any]:
    """The layer a resumed run starts from: how it trained, without its paths, URL and checksum. Those come
    from the command line or the defaults: a checkpoint someone sent may not choose where a run writes,
    what it downloads or which checksum that is held to (the recorded ones are shown, see fit)."""
    return {k: v for k, v in recorded_settings(resume).items() if k not in PATHS}


# Settings a resumed run cannot change, and why; everything else is applied to what it controls (the
# optimizer's parameter groups and the schedule's base values: cifar10.optimizers.apply_hyperparameters).
FIXED_ON_RESUME = {
    "optimizer": "the saved optimizer state (momentum buffers, Adam's moments) belongs to the optimizer that made it",
    "val_size": "it changes which images train and which validate, so validation would score images already trained on",
    "normalize": "the weights were trained on inputs normalised the recorded way",
    "seed": "it changes the validation split, and the order and augmentation of the epochs not yet trained",
}
# Settings that change the batches of an epoch: applied from an epoch's end, refused inside one (the
# resumed epoch skips the batches done, counted in batches of the recorded size and shards of the recorded
# number of processes).
PER_EPOCH = ("batch_size", "limit_train_batches", "devices", "num_nodes")


def check_resume(settings: dict[str, Any], resume: runs.ResumePoint) -> None:
    """Refuse, before anything runs, a resume that cannot continue its run as the settings say."""
    saved = recorded_settings(resume)
    changed = [k for k in settings if k in saved and saved[k] != settings[k]]
    flag = lambda key: "--" + key.replace("_", "-")  # noqa: E731
    problems = [f"{flag(k)} {settings[k]} (recorded: {saved[k]}): {FIXED_ON_RESUME[k]}"
                for k in changed if k in FIXED_ON_RESUME]
    if "bias_lr_scale" in changed and (saved["bias_lr_scale"] == 1.0) != (settings["bias_lr_scale"] == 1.0):
        problems.append(f"--bias-lr-scale {settings['bias_lr_scale']} (recorded: {saved['bias_lr_scale']}): 1 and "
                        "other values give the optimizer different parameter groups")
    if resume.mid_epoch:
        problems += [f"{flag(k)} {settings[k]} (recorded: {saved[k]}): the checkpoint was saved inside epoch "
                     f"{resume.position.get('epoch')}, whose remaining batches are counted in the recorded size; it "
                     "can change only from an epoch's end" for k in changed if k in PER_EPOCH]
    if problems:
        raise UserError(f"cannot resume {resume.ckpt} with " + "; ".join(problems) + ". Nothing was run: resume "
                        "without changing these (drop the flag or --config key), or start a new run.")
    trained = saved.get("max_epochs")
    if resume.status == "finished" and trained is not None and settings["max_epochs"] <= trained:
        raise UserError(f"{resume.ckpt} belongs to a finished run ({resume.run_dir}, {trained} epochs, metrics.json "
                        f"says finished), so resuming it with --max-epochs {settings['max_epochs']} would only test "
                        "it again and overwrite its results. Nothing was run. To train it further pass a --max-epochs "
                        f"above {trained}; to test it, `python -m cifar10.evaluate --ckpt {resume.ckpt}`.")


def models_epilog() -> str:
    width = max(map(len, model_names()))
    lines = [f"  {name:<{width}}  {model_info(name).published}" for name in model_names()]
    return "models (--model NAME) and their published accuracy:\n" + "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """Every settings field's flag, in its group. Every flag defaults to 'not given' (SUPPRESS), so the layers
    below them stay visible."""
    parser = CliParser(prog="python -m cifar10.fit", hint="every flag and model",
                       description="Train a CIFAR-10 classifier.", epilog=models_epilog(),
                       formatter_class=argparse.RawDescriptionHelpFormatter, argument_default=argparse.SUPPRESS)
    groups = {title: parser if title is None else parser.add_argument_group(title) for title in GROUPS}
    parser.flags = [add_flag(groups[f.metadata["group"]], f)  # every flag's Action, for --config (argparse
                    for f in declared(FLAG_ORDER) if f.metadata["cli"]]  # lists them only privately)
    return parser


CONFIG_LIMIT = 64 << 10  # a config of every flag is about 1 kB


def read_config(path: Path) -> dict[str, Any]:
    """The --config file as a flat mapping: a bounded regular file, UTF-8, one mapping whose values are single
    values or lists of them (`betas: [0.9, 0.995]`, `logger: [csv, mlflow]`).

    Its YAML events are checked before anything is built from them: aliases are refused (an alias of an
    alias... expands exponentially, the "billion laughs"), and so is any deeper nesting (a mapping as a value,
    a list in a list), so no nesting reaches the constructor and nothing large is ever made.
    """
    from cifar10.files import NotReadable, read_bounded  # (torch's checkpoint I/O beside it)
    try:
        text = read_bounded(path, CONFIG_LIMIT).decode("utf-8")
    except NotReadable as err:
        raise UserError(f"cannot read --config: {err}. Pass a YAML file of flag names and values, like `lr: 0.05`.") \
            from None
    except UnicodeDecodeError as err:
        raise UserError(f"--config {path} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}): "
                        "save it as UTF-8.") from None
    try:
        depth = 0
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                raise UserError(f"--config {path} uses a YAML alias (*name), which configs may not: write each "
                                "value out.")
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                flat_list = depth == 2 and isinstance(event, yaml.SequenceStartEvent)
                if depth > 1 and not flat_list:
                    raise UserError(f"--config {path} nests a mapping or a list too deep (line "
                                    f"{event.start_mark.line + 1}); each key takes a single value or a list of them, "
                                    "like `lr: 0.05` or `betas: [0.9, 0.995]`.")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
        config = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise UserError(f"--config {path} is not valid YAML: {err}") from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise UserError(f"--config {path} must be a mapping of flag names to values, like `lr: 0.05`.")
    return config


def config_tokens(path: Path, parser: argparse.ArgumentParser) -> list[str]:
    """Turn a YAML config into flags, so argparse checks its values exactly like the command line's."""
    config = read_config(path)
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
        if isinstance(value, list):  # --logger's list
            tokens += [flag, *map(str, value)]
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
    built_in = defaults()
    if "ckpt_path" in given:
        ckpt, logdir = given["ckpt_path"], Path(given.get("logdir", built_in["logdir"]))
        resume = runs.resume_point(ckpt, logdir, model or (DEFAULT_MODEL if ckpt == "last" else None))
        model = resume.model
    model = model or DEFAULT_MODEL
    check_model(model)
    saved = saved_layer(resume) if resume else {}
    environment = {key: os.environ[name] for key, name in ENVIRONMENT.items() if os.environ.get(name)}
    layers = [built_in, environment, recipe(model, saved.get("recipe", "default")), saved]
    if "recipe" in given:  # over the resumed run's settings: the whole recipe, defaults included
        layers.append(recipe_settings(model, given["recipe"]))
    settings = {k: v for layer in layers for k, v in layer.items()} | given | {"model": model}
    check_values(settings)
    if resume:
        check_resume(settings, resume)
        if resume.run_dir:  # it continues in its own run folder: record the logdir that folder is in
            settings["logdir"] = str(resume.run_dir.parent.parent)
    return settings, resume


def settings_from(argv: Sequence[str]) -> tuple[Settings, runs.ResumePoint | None]:
    """The command line's settings, layered, checked, with 'auto' resolved, in sections; and the resume point."""
    flat, resume = resolve_settings(given_settings(argv))
    return Settings.from_flat(resolve_auto(flat)), resume


def resolved(given: dict[str, Any]) -> Settings:
    """Settings from flag-named values as a program gives them (benchmarks), layered like the command line's."""
    return Settings.from_flat(resolve_auto(resolve_settings(given)[0]))
