"""Train a list of models (x seeds) one after another, each in its own fit process, and tabulate the results.

Each (model, seed) runs as `python -m cifar10.fit --model M --recipe R --seed S --data-dir DIR --logdir
LOGDIR/R --accelerator A [--fit-args ...]` in a process of its own, so a crash ends only that run. Its
output is appended to `LOGDIR/R/M-seedS.log`; the run folder is read from the `run folder: PATH` line
fit prints, and its metrics.json becomes one JSON line on stdout as soon as the run ends (`--out
FILE.jsonl` appends the same lines to a file). A failed run (non-zero exit, or no metrics.json) gives a
line `{"status": "failed", ...}` naming its log, and the list goes on. Progress, failures and a final
table (epochs, training seconds, images/s, test accuracy, test-time augmentation, the published figure)
go to stderr, so stdout holds only JSON lines. Exit code 1 when a run failed.

The list is a queue that survives being stopped, as a job on a preemptible cluster must: Ctrl-C or
SIGTERM lets the running fit save its last.ckpt at a batch boundary, stops the list and prints the
command that continues it, which is the same command. Run again, each (model, seed) is looked up in its
log: a run whose folder holds a finished metrics.json is skipped (reported as done, its JSON line
printed again but not appended to `--out` twice); one whose folder holds a last.ckpt and no metrics.json
is resumed from that checkpoint into the same folder (`fit --ckpt-path FOLDER/checkpoints/last.ckpt`);
one that failed is reported and skipped (`--retry-failed` runs it again); the rest start new runs.
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
from cifar10.runs import metrics as run_metrics
from cifar10.runs.metrics import METRICS_FILE
from cifar10.settings import ACCELERATORS

RUN_FOLDER = re.compile(r"^run folder: (.+?)(?: \(resuming .*\))?$")
OWN_FLAGS = ("--model", "--recipe", "--seed", "--data-dir", "--logdir", "--accelerator")  # set per run here
TAIL_LINES = 15  # lines of a failed run's log shown on stderr
STOPPED = (129, 130, 143)  # fit's exit codes after SIGHUP, SIGINT, SIGTERM: its last.ckpt resumes
FAILED_MARK = "# bench results: failed: "  # written to a run's log when it fails, so a rerun skips it

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
    parser.add_argument("--accelerator", choices=ACCELERATORS, default="auto", help="default auto")
    parser.add_argument("--fit-args", default="", metavar="ARGS",
                        help="extra flags for every fit, e.g. '--max-epochs 5 --precision bf16-mixed'")
    parser.add_argument("--out", metavar="FILE.jsonl", help="also append each run's JSON line to this file")
    parser.add_argument("--retry-failed", action="store_true",
                        help="run again the runs an earlier invocation recorded as failed (default: report them "
                             "and skip them)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print what each run would do (start, resume, skip) and train nothing")


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


def run_command(command: list[str], log: Path, env: dict[str, str] | None = None) -> int:
    """Run command with its stdout and stderr appended to log; its exit code.

    The child runs in a session of its own, so a Ctrl-C reaches only this process, which passes one SIGINT
    on and waits while fit saves its last.ckpt; a second Ctrl-C kills the child. A SIGTERM to this
    process (a scheduler ending the job) is handled like the first Ctrl-C. Either way the
    KeyboardInterrupt is raised again afterwards. `env`: the child's environment (default: this one's).
    """
    with open(log, "ab") as out, sigterm_as_ctrl_c():
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=(env or os.environ) | {"PYTHONUNBUFFERED": "1"}, start_new_session=True)
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
    """The run folder's metrics.json as fit wrote it (read bounded and checked as a RunMetrics,
    cifar10.runs.metrics), or None and why not."""
    if folder is None:
        return None, "fit printed no 'run folder:' line"
    path = folder / METRICS_FILE
    if not path.exists():
        return None, f"no {path}"
    try:
        return run_metrics.read_metrics_json(path), ""
    except run_metrics.BadMetrics as err:
        return None, f"cannot read {path}: {err}"


@dataclass(frozen=True)
class EarlierAttempt:
    """What earlier invocations of the queue left of a planned run, read from its log and the folder it names."""

    state: str  # "new" (nothing to continue), "done", "unfinished" (a last.ckpt to resume) or "failed"
    folder: Path | None = None
    metrics: dict[str, Any] | None = None
    error: str = ""

    @property
    def last_ckpt(self) -> Path:
        return self.folder / "checkpoints" / "last.ckpt"


def earlier_attempt(planned: PlannedRun) -> EarlierAttempt:
    """Where this run stands after earlier invocations: the run folder fit printed last (a resumed run prints
    the same folder again) and the failure mark of the newest attempt (each attempt starts with a `$ ` line)."""
    try:
        text = planned.log.read_text(errors="replace")
    except FileNotFoundError:
        return EarlierAttempt("new")
    newest = text[text.rfind("\n$ ") + 1:]
    folder = find_run_folder(text)
    metrics, _ = read_metrics(folder)
    if metrics is not None and metrics.get("status", "finished") == "finished":
        return EarlierAttempt("done", folder, metrics)
    marks = [line.removeprefix(FAILED_MARK) for line in newest.splitlines() if line.startswith(FAILED_MARK)]
    if marks or metrics is not None:  # a metrics.json that is not "finished" says status: failed
        return EarlierAttempt("failed", folder, metrics, marks[-1] if marks else metrics.get("error", "failed"))
    if folder is not None and (folder / "checkpoints" / "last.ckpt").is_file():
        return EarlierAttempt("unfinished", folder)
    return EarlierAttempt("new")


def run_one(planned: PlannedRun, command: list[str], runner: Runner) -> tuple[dict[str, Any], Path | None]:
    """Train (or resume) one run: its metrics.json (or a failure record naming its log), and its run folder.
    A failure is also marked in the log, so that the next invocation of the queue skips it; a fit stopped by
    a signal stops the queue (KeyboardInterrupt), to be resumed by the next invocation."""
    planned.log.parent.mkdir(parents=True, exist_ok=True)
    with open(planned.log, "a") as log:
        log.write(f"$ {shlex.join(command)}\n")
    start = planned.log.stat().st_size
    returncode = runner(command, planned.log)
    if returncode in STOPPED:  # the fit itself was signalled (a scheduler signals every process): stop the queue
        raise KeyboardInterrupt
    with open(planned.log, "rb") as log:
        log.seek(start)
        text = log.read().decode(errors="replace")
    folder = find_run_folder(text)
    metrics, why = read_metrics(folder)
    if returncode == 0 and metrics is not None:
        return metrics, folder
    error = f"exit code {returncode}" if returncode else why
    with open(planned.log, "a") as log:
        log.write(f"\n{FAILED_MARK}{error}\n")
    tail = [line for line in text.splitlines() if line.strip()][-TAIL_LINES:]
    return failure(planned, error, returncode, tail), folder


def failure(planned: PlannedRun, error: str, returncode: int | None, tail: list[str]) -> dict[str, Any]:
    return {"model": planned.model, "recipe": planned.recipe, "seed": planned.seed, "status": "failed",
            "returncode": returncode, "error": error, "log": str(planned.log), "log_tail": tail}


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


def queue_command(args: argparse.Namespace) -> str:
    """The command that continues this queue: the same list, the same flags."""
    parts = ["python", "-m", "cifar10.bench", "results", "--models", *args.models, "--recipe", args.recipe,
             "--seeds", *map(str, args.seeds), "--data-dir", str(args.data_dir), "--logdir", str(args.logdir),
             "--accelerator", args.accelerator]
    parts += ["--fit-args", args.fit_args] if args.fit_args else []
    parts += ["--out", str(args.out)] if args.out else []
    return shlex.join(parts)


def next_step(p: PlannedRun, earlier: EarlierAttempt, retry_failed: bool) -> tuple[str, list[str] | None]:
    """What to do with a planned run: a word for the progress line and the fit command (None: skip it)."""
    if earlier.state == "done":
        return f"done earlier (run folder {earlier.folder})", None
    if earlier.state == "failed" and not retry_failed:
        return f"failed earlier ({earlier.error}; --retry-failed runs it again)", None
    if earlier.state == "unfinished":
        return f"resuming {earlier.last_ckpt}", [*p.command, "--ckpt-path", str(earlier.last_ckpt)]
    return "training", p.command


def skipped_result(p: PlannedRun, earlier: EarlierAttempt) -> dict[str, Any]:
    if earlier.state == "done":
        return earlier.metrics
    return failure(p, earlier.error, None, [])


def interrupted(p: PlannedRun, results: list[dict[str, Any]], total: int, args: argparse.Namespace) -> int:
    done = ", ".join(f"{r['model']} seed {r['seed']}" + (" (failed)" if failed(r) else "") for r in results)
    print(f"\nInterrupted during {p.name}; {len(results)} of {total} runs finished"
          f"{': ' + done if done else ''}. Its log: {p.log}\nContinue the queue (finished runs are skipped, the "
          f"stopped one resumes) with: {queue_command(args)}", file=sys.stderr)
    if results:
        print("\n" + results_table(results), file=sys.stderr)
    return 130


def run(args: argparse.Namespace, runner: Runner | None = None) -> int:
    runner = runner or run_command
    planned = plan_runs(args)
    steps = [next_step(p, earlier_attempt(p), args.retry_failed) for p in planned]
    if args.dry_run:
        for p, (what, command) in zip(planned, steps):
            print(f"{shlex.join(command)}  # log: {p.log}" if command else f"# {p.name}: {what}")
        return 0
    out = Path(args.out) if args.out else None
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    for index, (p, (what, command)) in enumerate(zip(planned, steps), start=1):
        print(f"[{index}/{len(planned)}] {p.name}: {what}, log: {p.log}", file=sys.stderr, flush=True)
        if command is None:
            results.append(skipped_result(p, earlier_attempt(p)))
            emit(results[-1], None)  # printed again, not appended to --out a second time
            continue
        try:
            result, folder = run_one(p, command, runner)
        except KeyboardInterrupt:
            return interrupted(p, results, len(planned), args)
        results.append(result)
        emit(result, out)
        print(progress(index, len(planned), p, result, folder), file=sys.stderr, flush=True)
    print("\n" + results_table(results), file=sys.stderr)
    return 1 if any(failed(r) for r in results) else 0
