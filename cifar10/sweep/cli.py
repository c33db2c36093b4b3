"""The `python -m cifar10.sweep` command: its flags, the study it opens, and the loop that runs trials.

Every process started with the same command and the same `--storage` works on one study: each asks
Optuna for the next trial (a queued retry first), runs it as fits in processes of their own
(cifar10.sweep.objective) and tells Optuna the result, until `--trials` places are taken
(cifar10.sweep.budget); then it waits for the trials other processes still run, and reports.
"""

import argparse
import re
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning

from cifar10.errors import CliParser, UserError, exits_cleanly
from cifar10.recipes import RECIPES
from cifar10.fit_settings import build_parser as fit_parser, check_model, resolve_settings
from cifar10.settings import PATHS, defaults
from cifar10.sweep import budget, report, storage
from cifar10.sweep.objective import FitCrashed, Surplus, TrialFailed, TrialPlan, objective
from cifar10.sweep.pruners import PRUNERS, make_pruner
from cifar10.sweep.space import Param, read_space

PROG = "python -m cifar10.sweep"
SAMPLERS = ("tpe", "random", "grid")
OWN_FIT_FLAGS = {"model": "--model", "recipe": "--recipe", "seed": "--seeds", "logdir": "--logdir",
                 "ckpt_path": "a retried trial resumes its own runs", "config": "--space and fit flags"}
# settings that may differ between the machines of one study: where data and runs are, what runs them
PER_MACHINE = set(PATHS) | {"accelerator", "devices", "num_nodes", "strategy"}
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def build_parser() -> argparse.ArgumentParser:
    parser = CliParser(prog=PROG, hint="every flag", allow_abbrev=False,  # --seed must not pass for --seeds
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Search fit settings with Optuna: each trial is an ordinary fit run; the "
                       "objective is its best validation accuracy (the mean over --seeds).",
                       epilog="Every other flag is a fit flag passed to each trial (python -m cifar10.fit "
                       "--help), e.g. --data-dir DIR --max-epochs 5.\n\nThe same command on many machines "
                       "with one --storage URL works on one study: each process takes the next trial, "
                       "until --trials in total.")
    add = parser.add_argument
    add("--model", metavar="NAME", help="the model every trial trains")
    add("--recipe", choices=RECIPES, default="default", help="the recipe the searched settings override")
    add("--space", type=Path, metavar="SPACE.yaml",
        help="settings and their ranges, e.g. `lr: {log: [1e-4, 1e-1]}`, `augment: {choice: [flip, heavy]}`")
    add("--trials", type=int, metavar="N", help="trials in the study in total, over every process")
    add("--study", metavar="NAME", help="study name (default MODEL-RECIPE); its runs go to LOGDIR/sweeps/NAME/")
    add("--storage", metavar="URL",
        help="Optuna RDB URL shared by every process, e.g. postgresql://USER:PASS@HOST/DB "
        "(default: sqlite file LOGDIR/sweeps/optuna.sqlite3)")
    add("--sampler", choices=SAMPLERS, default="tpe", help="default tpe")
    add("--pruner", choices=PRUNERS, default="median", help="stop poor trials early by epoch (default median)")
    add("--seeds", type=int, nargs="+", default=[0], metavar="S", help="a trial's value is the mean over these")
    add("--logdir", default=defaults()["logdir"], metavar="DIR", help="default lightning_logs")
    add("--heartbeat", type=int, default=60, metavar="S",
        help="seconds between a running trial's heartbeats; a trial silent for 3x that is failed and "
        "retried (default 60)")
    add("--report", action="store_true", help="train nothing: the table, best.yaml, plots and JSON line")
    return parser


def fit_flags(tokens: list[str]) -> dict[str, Any]:
    """The pass-through fit flags, parsed by fit's parser (so a typo is an error before any trial)."""
    for token in tokens:
        if token.startswith("-") and not token.startswith("--"):
            raise UserError(f"{token}: flags are written in full (see `{PROG} --help`).")
    fixed = vars(fit_parser().parse_args(tokens))
    own = [f"--{k.replace('_', '-')} (use {OWN_FIT_FLAGS[k]})" for k in fixed if k in OWN_FIT_FLAGS]
    if own:
        raise UserError(f"{', '.join(own)}: the sweep sets this for each trial itself.")
    return fixed


def study_info(args: argparse.Namespace, params: list[Param], fixed: dict[str, Any]) -> dict[str, Any]:
    return {"model": args.model, "recipe": args.recipe, "space": {p.name: p.as_dict() for p in params},
            "seeds": args.seeds, "fixed": fixed}


def check_same_study(name: str, saved: dict[str, Any], wanted: dict[str, Any]) -> None:
    """A study holds one model, recipe, space and seeds; anything else belongs in a study of its own."""
    keys = ["model", "recipe", "space", "seeds"]
    differ = [f"{k} {saved.get(k)!r} there, {wanted[k]!r} here" for k in keys if saved.get(k) != wanted[k]]
    fixed = {k: v for k, v in wanted["fixed"].items() if k not in PER_MACHINE}
    was = {k: v for k, v in saved.get("fixed", {}).items() if k not in PER_MACHINE}
    if fixed != was:
        differ.append(f"fit flags {was!r} there, {fixed!r} here")
    if differ:
        raise UserError(f"study {name!r} already exists with other settings: {'; '.join(differ)}. Its trials "
                        "would not be comparable: pass another --study name (or the same settings).")


def make_sampler(name: str, params: list[Param]) -> optuna.samplers.BaseSampler:
    """TPE with the constant liar, Optuna's advice for many workers (running trials count as poor, so
    processes asking at once do not all draw the same region); Bergstra et al., NeurIPS 2011."""
    if name == "grid":
        return optuna.samplers.GridSampler({p.name: p.grid() for p in params})
    if name == "random":
        return optuna.samplers.RandomSampler()
    return optuna.samplers.TPESampler(constant_liar=True)


def grid_size(params: list[Param]) -> int:
    size = 1
    for p in params:
        size *= len(p.grid())
    return size


def most_epochs(params: list[Param], base: dict[str, Any]) -> int:
    """The epochs of the longest trial (HyperbandPruner's max_resource)."""
    for p in params:
        if p.name == "max_epochs":
            return int(max(p.values))
    return int(base["max_epochs"])


def open_study(url: str, name: str, heartbeat: int | None, sampler=None, pruner=None,
               create: bool = False) -> optuna.Study:
    rdb = storage.open_storage(url, heartbeat)
    if create:
        return optuna.create_study(study_name=name, storage=rdb, sampler=sampler, pruner=pruner,
                                   direction="maximize", load_if_exists=True)
    try:
        return optuna.load_study(study_name=name, storage=rdb, sampler=sampler, pruner=pruner)
    except KeyError:
        names = optuna.get_all_study_names(rdb)
        raise UserError(f"no study {name!r} in {storage.masked(url)}; it has: {', '.join(names) or 'none'}. "
                        "Pass --study NAME (and the --storage or --logdir it was run with).") from None


def progress(total: int):
    def show(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if budget.released(trial) and trial.user_attrs[budget.RELEASED].get("why") == "beyond --trials":
            return
        value = ""
        if trial.value is not None:  # a pruned trial's value is its last reported epoch's accuracy
            what = "best validation accuracy" if trial.state.name == "COMPLETE" else "last validation accuracy"
            value = f", {what} {100 * trial.value:.2f}%"
        drawn = ", ".join(f"{k}={report.param_text(v)}" for k, v in trial.params.items())
        print(f"[trial {trial.number}, study has {total}] {trial.state.name}{value} ({drawn}) "
              f"{report.note(trial)}".rstrip(), file=sys.stderr, flush=True)
    return show


def run_trials(study: optuna.Study, plan: TrialPlan, poll_s: int) -> None:
    """Ask, run and tell trials until the study holds --trials finished ones."""
    waiting_said = False
    while True:
        optuna.storages.fail_stale_trials(study)  # another process's dead trial is queued again first
        places = budget.places(study, plan.total)
        if places.done:
            return
        if places.open <= 0 and not places.waiting:
            if not waiting_said:
                print(f"all {plan.total} trials are taken; waiting for the {places.running} still running",
                      file=sys.stderr, flush=True)
                waiting_said = True
            time.sleep(poll_s)
            continue
        study.optimize(objective(plan, study), n_trials=1, catch=(TrialFailed, Surplus),
                       callbacks=[progress(plan.total)])


def plan_and_study(args: argparse.Namespace, fixed: dict[str, Any]) -> tuple[TrialPlan, optuna.Study]:
    if not args.model or not args.space or args.trials is None:
        raise UserError(f"a sweep needs --model, --space and --trials (or --report with --study). Run `{PROG} "
                        "--help` for every flag.")
    if args.trials < 1 or args.heartbeat < 1:
        raise UserError("--trials and --heartbeat must be at least 1.")
    check_model(args.model)
    base, _ = resolve_settings({**fixed, "model": args.model, "recipe": args.recipe})  # bad fixed values fail here
    params = read_space(args.space, args.model, args.recipe, fixed)
    total = args.trials
    if args.sampler == "grid" and grid_size(params) < total:
        print(f"--sampler grid: the grid has {grid_size(params)} points, so the study ends after as many "
              f"trials (not {total}).", file=sys.stderr)
        total = grid_size(params)
    name = study_name(args)
    url = args.storage or storage.default_url(Path(args.logdir))
    pruner = {"name": args.pruner, "max_epochs": most_epochs(params, base)}
    study = open_study(url, name, args.heartbeat, make_sampler(args.sampler, params), make_pruner(**pruner),
                       create=True)
    wanted = study_info(args, params, fixed)
    if "cifar10" in study.user_attrs:
        check_same_study(name, study.user_attrs["cifar10"], wanted)
    elif study.get_trials(deepcopy=False):
        raise UserError(f"study {name!r} in {storage.masked(url)} has trials but is not a cifar10 sweep; pass "
                        "another --study name.")
    else:
        study.set_user_attr("cifar10", wanted)
    plan = TrialPlan(model=args.model, recipe=args.recipe, seeds=args.seeds, params=params,
                     fit_flags=args.fit_tokens, study_dir=study_dir(args, name), study=name,
                     storage=storage.with_driver(url), pruner=pruner, total=total)
    return plan, study


def study_name(args: argparse.Namespace) -> str:
    if args.study is None and not args.model:
        raise UserError("--report needs --study NAME (or --model, for the default name MODEL-RECIPE).")
    name = args.study or f"{args.model}-{args.recipe}"
    if not STUDY_NAME.fullmatch(name):
        raise UserError(f"--study {name!r}: use letters, digits, '.', '_' and '-' (it names a folder).")
    return name


def study_dir(args: argparse.Namespace, name: str) -> Path:
    return Path(args.logdir) / "sweeps" / name


def show_report(study: optuna.Study, args: argparse.Namespace, url: str, total: int | None) -> None:
    if "cifar10" not in study.user_attrs:
        raise UserError(f"study {study.study_name!r} is not a cifar10 sweep (it has no sweep settings).")
    print(report.report(study, study_dir(args, study.study_name), storage.masked(url), total), flush=True)


@exits_cleanly
def main(argv: Sequence[str] | None = None) -> int:
    warnings.filterwarnings("ignore", category=ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # progress is ours; Optuna would add tracebacks
    args, rest = build_parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    args.fit_tokens = rest
    fixed = fit_flags(rest)
    if args.report:
        url = args.storage or storage.default_url(Path(args.logdir))
        study = open_study(url, study_name(args), None)
        show_report(study, args, url, args.trials)
        return 0
    plan, study = plan_and_study(args, fixed)
    print(f"study {plan.study} ({storage.masked(plan.storage)}): {plan.total} trials in total; runs in "
          f"{plan.study_dir}", file=sys.stderr, flush=True)
    try:
        run_trials(study, plan, poll_s=min(args.heartbeat, 10))
    except FitCrashed as crash:
        raise UserError(f"{crash}\nThe sweep stopped: fix the cause and run the same command again (this "
                        "trial's place is given back).") from None
    except KeyboardInterrupt:
        print(f"\nInterrupted (a trial that was running is queued again, its fit saved): run the same command "
              f"to continue study {plan.study}.", file=sys.stderr)
        return 130
    show_report(study, args, plan.storage, plan.total)
    return 0
