"""Train a list of models (x seeds) one after another, each in its own fit process, and tabulate the results.

Each (model, seed) runs as `python -m cifar10.fit --model M --recipe R --seed S --data-dir DIR --logdir
LOGDIR/R --accelerator A [--fit-args ...]` in a process of its own, so a crash ends only that run. Its
output is appended to `LOGDIR/R/M-seedS.log`; the run folder is read from the `run folder: PATH` line
fit prints, and its metrics.json becomes one JSON line on stdout as soon as the run ends (`--out
FILE.jsonl` appends the same lines to a file). A failed run (non-zero exit, or no metrics.json) gives a
line `{"status": "failed", ...}` naming its log, and the list goes on. Progress, failures and a final
table (epochs, training seconds, images/s, test accuracy, test-time augmentation, the published figure)
go to stderr, so stdout holds only JSON lines. Exit code 1 when a run failed. Ctrl-C lets the running fit
save its last.ckpt (resumable with fit's `--ckpt-path last`), stops the list and says which runs finished.
"""

import argparse
import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cifar10.errors import UserError
from cifar10.models import model_info, model_names
from cifar10.recipes import RECIPES
from cifar10.reporting import format_table

RUN_FOLDER = re.compile(r"^run folder: (.+?)(?: \(resuming .*\))?$")
OWN_FLAGS = ("--model", "--recipe", "--seed", "--data-dir", "--logdir", "--accelerator")  # set per run here
TAIL_LINES = 15  # lines of a failed run's log shown on stderr

Runner = Callable[[list[str], Path], int]  # (command, log file to append its output to) -> exit code


@dataclass(frozen=True)
class PlannedRun:
    model: str
    recipe: str
    seed: int
    command: list[str]
    log: Path

    @property
    def name(self) -> str:
        return f"{self.model} ({self.recipe} recipe, seed {self.seed})"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", default=["all"], metavar="M",
                        help=f"models to train in this order, or 'all' (default): {', '.join(model_names())}")
    parser.add_argument("--recipe", choices=RECIPES, default="default", help="recipe of every run (default default)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], metavar="S",
                        help="seeds to train each model with (default 0)")
    parser.add_argument("--data-dir", default="data", help="folder holding (or to receive) CIFAR-10 (default data)")
    parser.add_argument("--logdir", default="lightning_logs/results",
                        help="runs go to LOGDIR/RECIPE/MODEL/version_N, logs to LOGDIR/RECIPE/MODEL-seedS.log "
                             "(default lightning_logs/results)")
    parser.add_argument("--accelerator", choices=("auto", "cpu", "gpu"), default="auto", help="default auto")
    parser.add_argument("--fit-args", default="", metavar="ARGS",
                        help="extra flags for every fit, e.g. '--max-epochs 5 --precision bf16-mixed'")
    parser.add_argument("--out", metavar="FILE.jsonl", help="also append each run's JSON line to this file")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and train nothing")


def resolve_models(names: list[str]) -> list[str]:
    """'all' stands for every registered model; duplicates are dropped, the order kept."""
    known = model_names()
    unknown = [n for n in names if n != "all" and n not in known]
    if unknown:
        raise UserError(f"unknown model(s) {', '.join(map(repr, unknown))} for --models. Choose from: "
                        f"{', '.join(known)}, or 'all'.")
    expanded = [m for n in names for m in (known if n == "all" else [n])]
    return list(dict.fromkeys(expanded))


def fit_extra_args(text: str) -> list[str]:
    """--fit-args as tokens; the flags this command sets for each run are refused."""
    try:
        tokens = shlex.split(text)
    except ValueError as err:
        raise UserError(f"--fit-args {text!r} cannot be split into flags: {err}.") from None
    clashing = sorted({t.split("=", 1)[0] for t in tokens} & set(OWN_FLAGS))
    if clashing:
        raise UserError(f"--fit-args must not contain {', '.join(clashing)}: this command sets them for each run "
                        "(use --models, --recipe, --seeds, --data-dir, --logdir and --accelerator).")
    return tokens


def plan_runs(args: argparse.Namespace) -> list[PlannedRun]:
    """Every (model, seed), model by model, with its fit command and log file."""
    models, extra = resolve_models(args.models), fit_extra_args(args.fit_args)
    logdir = Path(args.logdir) / args.recipe
    return [PlannedRun(model, args.recipe, seed, [
        sys.executable, "-m", "cifar10.fit", "--model", model, "--recipe", args.recipe, "--seed", str(seed),
        "--data-dir", str(args.data_dir), "--logdir", str(logdir), "--accelerator", args.accelerator, *extra],
        logdir / f"{model}-seed{seed}.log") for model in models for seed in args.seeds]


@contextlib.contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """Within: SIGTERM raises KeyboardInterrupt (in the main thread; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_command(command: list[str], log: Path) -> int:
    """Run command with its stdout and stderr appended to log; its exit code.

    The child runs in a session of its own, so a Ctrl-C reaches only this process, which passes one SIGINT
    on and waits while fit saves its last.ckpt; a second Ctrl-C kills the child. A SIGTERM to this
    process (a scheduler ending the job) is handled like the first Ctrl-C. Either way the
    KeyboardInterrupt is raised again afterwards.
    """
    with open(log, "ab") as out, sigterm_as_ctrl_c():
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=os.environ | {"PYTHONUNBUFFERED": "1"}, start_new_session=True)
        try:
            return child.wait()
        except KeyboardInterrupt:
            child.send_signal(signal.SIGINT)
            print(f"\nInterrupted: waiting for the running fit to save its checkpoint (see {log}); "
                  "Ctrl-C again to kill it.", file=sys.stderr, flush=True)
            try:
                child.wait()
            except KeyboardInterrupt:
                child.kill()
                child.wait()
            raise


def find_run_folder(log_text: str) -> Path | None:
    """The last `run folder: PATH` that fit printed."""
    folders = [m.group(1) for line in log_text.splitlines() if (m := RUN_FOLDER.match(line.strip()))]
    return Path(folders[-1]) if folders else None


def read_metrics(folder: Path | None) -> tuple[dict[str, Any] | None, str]:
    """The run folder's metrics.json, or None and why not."""
    if folder is None:
        return None, "fit printed no 'run folder:' line"
    path = folder / "metrics.json"
    try:
        return json.loads(path.read_text()), ""
    except FileNotFoundError:
        return None, f"no {path}"
    except (OSError, ValueError) as err:
        return None, f"cannot read {path}: {err}"


def run_one(planned: PlannedRun, runner: Runner) -> tuple[dict[str, Any], Path | None]:
    """Train one run: its metrics.json (or a failure record naming its log), and its run folder."""
    planned.log.parent.mkdir(parents=True, exist_ok=True)
    with open(planned.log, "a") as log:
        log.write(f"$ {shlex.join(planned.command)}\n")
    start = planned.log.stat().st_size
    returncode = runner(planned.command, planned.log)
    with open(planned.log, "rb") as log:
        log.seek(start)
        text = log.read().decode(errors="replace")
    folder = find_run_folder(text)
    metrics, why = read_metrics(folder)
    if returncode == 0 and metrics is not None:
        return metrics, folder
    tail = [line for line in text.splitlines() if line.strip()][-TAIL_LINES:]
    return {"model": planned.model, "recipe": planned.recipe, "seed": planned.seed, "status": "failed",
            "returncode": returncode, "error": f"exit code {returncode}" if returncode else why,
            "log": str(planned.log), "log_tail": tail}, folder


def failed(result: dict[str, Any]) -> bool:
    return result.get("status") == "failed"


def emit(result: dict[str, Any], out: Path | None) -> None:
    """One JSON line on stdout (and appended to out), the failed runs' without their log tail."""
    line = json.dumps({k: v for k, v in result.items() if k != "log_tail"})
    print(line, flush=True)
    if out is not None:
        with open(out, "a") as file:
            file.write(line + "\n")


def progress(index: int, total: int, planned: PlannedRun, result: dict[str, Any], folder: Path | None) -> str:
    head = f"[{index}/{total}] {planned.name}"
    if failed(result):
        tail = "\n".join("    " + line for line in result["log_tail"])
        return f"{head} FAILED ({result['error']}); log: {result['log']}, its last lines:\n{tail}"
    return (f"{head}: test accuracy {100 * result['test_acc']:.2f}%, {result['train_time_s']:.1f} s of training; "
            f"run folder: {folder}")


def results_table(results: list[dict[str, Any]]) -> str:
    """The finished runs side by side, each model's published figure beside its accuracy."""
    rows = []
    for r in results:
        if failed(r):
            continue
        tta = r.get("settings", {}).get("tta", "none")
        rows.append([r["model"], r["recipe"], r["seed"], r["epochs"], f"{r['train_time_s']:.1f}",
                     f"{r['train_images_per_s']:,.0f}", f"{100 * r['test_acc']:.2f}%",
                     "-" if tta in (None, "none") else tta, model_info(r["model"]).published])
    table = format_table(["model", "recipe", "seed", "epochs", "train s", "images/s", "test acc", "tta",
                          "published"], rows) if rows else "no run finished."
    failures = [f"failed: {r['model']} ({r['recipe']} recipe, seed {r['seed']}): {r['error']}; log {r['log']}"
                for r in results if failed(r)]
    return "\n".join([table, *failures])


def run(args: argparse.Namespace, runner: Runner | None = None) -> int:
    runner = runner or run_command
    planned = plan_runs(args)
    if args.dry_run:
        for p in planned:
            print(f"{shlex.join(p.command)}  # log: {p.log}")
        return 0
    out = Path(args.out) if args.out else None
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    for index, p in enumerate(planned, start=1):
        print(f"[{index}/{len(planned)}] training {p.name}, log: {p.log}", file=sys.stderr, flush=True)
        try:
            result, folder = run_one(p, runner)
        except KeyboardInterrupt:
            done = ", ".join(f"{r['model']} seed {r['seed']}" + (" (failed)" if failed(r) else "") for r in results)
            print(f"\nInterrupted during {p.name}; {len(results)} of {len(planned)} runs finished"
                  f"{': ' + done if done else ''}. Its log: {p.log}", file=sys.stderr)
            if results:
                print("\n" + results_table(results), file=sys.stderr)
            return 130
        results.append(result)
        emit(result, out)
        print(progress(index, len(planned), p, result, folder), file=sys.stderr, flush=True)
    print("\n" + results_table(results), file=sys.stderr)
    return 1 if any(failed(r) for r in results) else 0
