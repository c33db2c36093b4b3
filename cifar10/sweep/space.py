"""The search space: a YAML file naming fit settings and the range each is drawn from.

    lr: {log: [1e-4, 1e-1]}            # log-uniform float (Optuna's suggest_float(log=True))
    label_smoothing: {uniform: [0, 0.3]}
    max_epochs: {int: [5, 30]}          # integer, both ends included (suggest_int)
    augment: {choice: [crop-flip, heavy]}   # one of a list (suggest_categorical)

The file is someone else's input: it is read with a size bound and yaml.safe_load (no tags, no code),
and every name, range and endpoint is checked against fit's own flags and fit's own value checks
before any trial runs, so a bad space costs nothing. The distributions follow Optuna's
`Trial.suggest_*` API (https://optuna.readthedocs.io/en/stable/reference/generated/optuna.trial.Trial.html).
"""

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cifar10.errors import UserError
from cifar10.fit_settings import build_parser, resolve_settings

MAX_BYTES = 64 * 1024  # a search space is a few lines; anything larger is not one
KINDS = ("log", "uniform", "int", "choice")
# fit flags a sweep sets itself for every trial (or that name no setting), so a space cannot search them
NOT_SEARCHABLE = {"model": "the study's model is --model", "recipe": "the study's recipe is --recipe",
                  "seed": "seeds are --seeds: a trial's value is the mean over them",
                  "config": "it names a file, not a setting", "ckpt_path": "it names a file, not a setting",
                  "logdir": "trials go to the sweep's study folder", "data_dir": "it is a path, not a setting",
                  "data_url": "it is a path, not a setting", "data_md5": "it is a checksum, not a setting"}


@dataclass(frozen=True)
class Param:
    """One searched setting: its fit flag name (dest), the kind of range and the range's values."""

    name: str
    kind: str  # one of KINDS
    values: tuple  # (low, high) for log, uniform and int; the options for choice

    def suggest(self, trial: Any) -> Any:
        """Draw this setting for an Optuna trial (a retried trial gets its stored value back)."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.values))
        if self.kind == "int":
            return trial.suggest_int(self.name, *self.values)
        return trial.suggest_float(self.name, *self.values, log=self.kind == "log")

    def grid(self) -> list:
        """The values GridSampler walks through (only discrete ranges have a grid)."""
        if self.kind == "choice":
            return list(self.values)
        if self.kind == "int":
            return list(range(self.values[0], self.values[1] + 1))
        raise UserError(f"--sampler grid needs discrete ranges, but {self.name} is {{{self.kind}: "
                        f"{list(self.values)}}}. Use choice or int ranges for a grid, or --sampler tpe/random.")

    def as_dict(self) -> dict[str, list]:
        return {self.kind: list(self.values)}


def read_space(path: Path, model: str, recipe: str, fixed: dict[str, Any]) -> list[Param]:
    """The checked parameters of a space file; `fixed` are the fit flags passed to every trial."""
    raw = load_yaml(path)
    actions = {a.dest: a for a in build_parser().flags}
    params = [parse_param(path, str(name), spec, actions) for name, spec in raw.items()]
    for param in params:
        if param.name in fixed:
            raise UserError(f"--space {path}: {param.name} is searched there and also given as a fit flag; "
                            "drop one of the two.")
        check_values(path, param, actions[param.name], model, recipe, fixed)
    return params


def load_yaml(path: Path) -> dict:
    try:
        with open(path, "rb") as file:
            text = file.read(MAX_BYTES + 1)
    except OSError as err:
        raise UserError(f"cannot read --space {path}: {err.strerror}. Pass a YAML file of settings and "
                        "ranges, e.g. `lr: {log: [1e-4, 1e-1]}`.") from None
    if len(text) > MAX_BYTES:
        raise UserError(f"--space {path} is larger than {MAX_BYTES // 1024} KiB; a search space is a few lines "
                        "of `setting: {kind: [...]}`.")
    try:
        raw = yaml.safe_load(text.decode("utf-8", errors="replace"))
    except yaml.YAMLError as err:
        raise UserError(f"--space {path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"--space {path} must be a non-empty mapping of fit settings to ranges, like "
                        "`lr: {log: [1e-4, 1e-1]}`.")
    return raw


def parse_param(path: Path, name: str, spec: Any, actions: dict[str, argparse.Action]) -> Param:
    """Check the name is a searchable fit setting and the range has the right shape and type for it."""
    name = name.replace("-", "_")
    where = f"--space {path}: {name}"
    if name in NOT_SEARCHABLE:
        raise UserError(f"{where} cannot be searched: {NOT_SEARCHABLE[name]}.")
    if name not in actions:
        known = sorted(set(actions) - set(NOT_SEARCHABLE))
        raise UserError(f"{where} is not a fit setting. Searchable settings: {', '.join(known)}.")
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
        raise UserError(f"{where} must be one range of the form {{KIND: [...]}} with KIND one of "
                        f"{', '.join(KINDS)}, e.g. {{log: [1e-4, 1e-1]}}; got {spec!r}.")
    kind, values = next(iter(spec.items()))
    if not isinstance(values, list) or not values:
        raise UserError(f"{where}: {kind} needs a non-empty list, got {values!r}.")
    allowed = kinds_for(actions[name])
    if kind not in allowed:
        raise UserError(f"{where} is {describe(actions[name])}, so its range must be {' or '.join(allowed)}, "
                        f"not {kind}.")
    values = [as_number(v) for v in values] if numeric(actions[name]) else values
    if kind == "choice":
        if len(set(map(repr, values))) != len(values):
            raise UserError(f"{where}: choice lists a value twice: {values!r}.")
        return Param(name, kind, tuple(values))
    return Param(name, kind, bounds(where, kind, values))


def numeric(action: argparse.Action) -> bool:
    return action.type in (float, int) or getattr(action.type, "__name__", "") == "count_or_fraction"


def as_number(value: Any) -> Any:
    """YAML 1.1 (PyYAML) reads `1e-4` as a string (it wants `1.0e-4`): numbers written so count as numbers."""
    if isinstance(value, str):
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                pass
    return value


def kinds_for(action: argparse.Action) -> tuple[str, ...]:
    """Which ranges fit a flag: numbers may be drawn from ranges, everything else from a list."""
    if action.choices is not None or isinstance(action, argparse.BooleanOptionalAction):
        return ("choice",)
    if action.type is float:
        return ("log", "uniform", "choice")
    if action.type is int:
        return ("int", "choice")
    if getattr(action.type, "__name__", "") == "count_or_fraction":
        return ("int", "uniform", "choice")
    return ("choice",)


def describe(action: argparse.Action) -> str:
    if isinstance(action, argparse.BooleanOptionalAction):
        return "true or false"
    if action.choices is not None:
        return f"one of {', '.join(map(str, action.choices))}"
    return {float: "a float", int: "an integer"}.get(action.type, "a value")


def bounds(where: str, kind: str, values: list) -> tuple:
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
    if len(values) != 2 or not numbers:
        raise UserError(f"{where}: {kind} needs [low, high], two finite numbers, got {values!r}.")
    low, high = values
    if kind == "int" and not all(isinstance(v, int) for v in values):
        raise UserError(f"{where}: int needs two integers, got {values!r}.")
    if not low < high:
        raise UserError(f"{where}: the range {values!r} is empty (low must be below high; for one value, "
                        "pass it as a fit flag instead).")
    if kind == "log" and low <= 0:
        raise UserError(f"{where}: log needs low > 0, got {values!r}.")
    return (low, high) if kind == "int" else (float(low), float(high))


def check_values(path: Path, param: Param, action: argparse.Action, model: str, recipe: str,
                 fixed: dict[str, Any]) -> None:
    """Each endpoint or choice goes through fit's parser and fit's value checks, as a trial would."""
    candidates = param.values
    for value in candidates:
        try:
            parsed = vars(build_parser().parse_args(flag_tokens({param.name: value}, {param.name: action})))
            resolve_settings({**fixed, "model": model, "recipe": recipe, **parsed})
        except UserError as err:
            raise UserError(f"--space {path}: {param.name} = {value!r} would not train: {err}") from None


def flag_tokens(values: dict[str, Any], actions: dict[str, argparse.Action] | None = None) -> list[str]:
    """Settings as fit flags: `--weight-decay=0.001`, `--nesterov` / `--no-nesterov`."""
    actions = actions or {a.dest: a for a in build_parser().flags}
    tokens = []
    for name, value in values.items():
        flag = actions[name].option_strings[0]
        if isinstance(actions[name], argparse.BooleanOptionalAction):
            if not isinstance(value, bool):
                raise UserError(f"{name} must be true or false, not {value!r}.")
            tokens.append(flag if value else "--no-" + flag[2:])
        else:
            tokens.append(f"{flag}={value!r}" if isinstance(value, float) else f"{flag}={value}")
    return tokens


def from_stored(stored: dict[str, dict[str, list]]) -> list[Param]:
    """The parameters as a study's user attributes keep them (see Param.as_dict)."""
    return [Param(name, kind, tuple(values)) for name, spec in stored.items() for kind, values in spec.items()]
