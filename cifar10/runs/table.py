"""`python -m cifar10.runs [LOGDIR...]`: one table of every run under the logdirs, read from the runs.

A run is a `version_N` folder at any depth. Its figures come from its metrics.json; a folder without
one is listed as unfinished (it has checkpoints/last.ckpt) or empty (it has not). Only metrics.json
files are read, never a checkpoint, so hundreds of runs list in a moment.
"""

import argparse
import csv
import io
import json
import os
import re
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cifar10.errors import CliParser, UserError, exits_cleanly
from cifar10.reporting import format_table
from cifar10.runs import VERSION
from cifar10.runs.metrics import METRICS_FILE, BadMetrics, finite_number, read_metrics
from cifar10.settings import LOGGING, PATHS, PER_INVOCATION

PROG = "python -m cifar10.runs"
FORMATS = ("table", "markdown", "csv", "json")
FIGURES = ("test_acc", "best_val_acc", "train_time_s", "train_images_per_s")  # averaged by --group
DESCENDING = {"test_acc", "best_val_acc", "train_images_per_s", "runs"}  # --sort puts the largest first
# settings that do not change what a run learns: runs differing only in these fold into one --group row
NOT_A_DIFFERENCE = {"seed", *PATHS, *PER_INVOCATION, *LOGGING}


class NotARun(Exception):
    """A version_N folder whose metrics.json cannot be read as a run's: the message says why."""


@dataclass(frozen=True)
class Row:
    """One run folder, as far as its files tell (None: unknown)."""

    run_dir: Path
    status: str  # finished, interrupted, failed (metrics.json); unfinished, empty (no metrics.json)
    model: str
    recipe: str | None = None
    seed: int | None = None
    epochs: int | None = None
    precision: str | None = None
    device: str | None = None
    train_time_s: float | None = None
    train_images_per_s: float | None = None
    best_val_acc: float | None = None
    test_acc: float | None = None
    tta: str | None = None  # the test-time augmentation test_acc was measured with ("none": without)
    settings: dict[str, Any] = field(default_factory=dict, compare=False)  # metrics.json's, for --group


@dataclass(frozen=True)
class Group:
    """Runs that differ only in their seed: counts, and mean and sample std of each figure."""

    model: str
    recipe: str | None
    status: str
    tta: str | None
    precision: str | None
    device: str | None
    epochs: int | None
    seeds: list[int | None]
    stats: dict[str, tuple[float | None, float | None]]  # figure -> (mean, std); std None below 2 values
    differs: str = ""  # "key=value ..." settings telling this group apart from others of its model and recipe

    @property
    def runs(self) -> int:
        return len(self.seeds)


@dataclass(frozen=True)
class Column:
    key: str  # the name in csv and json (metrics.json's where there is one)
    header: str  # the name in table and markdown
    kind: str = "text"  # text, int, acc, seconds, rate, list


ROW_COLUMNS = [
    Column("model", "model"), Column("recipe", "recipe"), Column("seed", "seed", "int"),
    Column("epochs", "epochs", "int"), Column("precision", "precision"), Column("device", "device"),
    Column("train_time_s", "train s", "seconds"), Column("train_images_per_s", "images/s", "rate"),
    Column("best_val_acc", "best val", "acc"), Column("test_acc", "test acc", "acc"), Column("tta", "tta"),
    Column("status", "status"), Column("run_dir", "run folder"),
]
GROUP_COLUMNS = [
    Column("model", "model"), Column("recipe", "recipe"), Column("runs", "runs", "int"),
    Column("seeds", "seeds", "list"), Column("epochs", "epochs", "int"), Column("precision", "precision"),
    Column("device", "device"), Column("tta", "tta"),
    Column("test_acc_mean", "test acc", "acc"), Column("test_acc_std", "± sd", "acc"),
    Column("best_val_acc_mean", "best val", "acc"), Column("best_val_acc_std", "± sd", "acc"),
    Column("train_time_s_mean", "train s", "seconds"), Column("train_time_s_std", "± sd", "seconds"),
    Column("train_images_per_s_mean", "images/s", "rate"), Column("train_images_per_s_std", "± sd", "rate"),
    Column("status", "status"), Column("differs", "differs in"),
]
SORT_KEYS = [c.key for c in ROW_COLUMNS] + ["runs"]


# ---- finding and reading runs


def natural_key(path: Path) -> list:
    """version_10 after version_9: digit runs compare as numbers."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def discover_runs(logdir: Path) -> list[Path]:
    """Every version_N folder under `logdir` (itself included), not looking inside run folders."""
    if VERSION.fullmatch(logdir.name):
        return [logdir]
    found = []
    for parent, dirs, _ in os.walk(logdir):
        runs = [d for d in dirs if VERSION.fullmatch(d)]
        found += [Path(parent) / d for d in runs]
        dirs[:] = [d for d in dirs if d not in runs]
    return sorted(found, key=natural_key)


def read_run(run_dir: Path) -> Row:
    """The Row of one run folder; NotARun when its metrics.json is unreadable or not a run's."""
    metrics_path = run_dir / METRICS_FILE
    if not metrics_path.exists():
        status = "unfinished" if (run_dir / "checkpoints" / "last.ckpt").is_file() else "empty"
        return Row(run_dir, status, model=run_dir.parent.name)
    try:
        m = read_metrics(metrics_path)  # bounded: a FIFO, /dev/zero or a deep nesting is refused, not read
        seed = m.setting("seed")  # a failed run's, like its model, recipe and precision, is in its settings
        seed = None if seed is None else finite_number("seed", seed, int)
    except BadMetrics as why:
        raise NotARun(str(why)) from None
    return Row(
        run_dir, status=m.status, model=_text(m.setting("model")) or run_dir.parent.name,
        recipe=_text(m.setting("recipe")), seed=seed, epochs=m.epochs, precision=_text(m.setting("precision")),
        device=m.device, train_time_s=m.train_time_s, train_images_per_s=m.train_images_per_s,
        best_val_acc=m.best_val_acc, test_acc=m.test_acc,
        tta=str(m.settings.get("tta", "none")) if m.settings else None, settings=m.settings)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def collect(logdirs: Sequence[Path], warn) -> tuple[list[Row], list[Path]]:
    """Rows of every run under the logdirs, in logdir order, and the logdirs that do not exist.
    A folder that is not a run is left out with one line through `warn`."""
    rows, missing, seen = [], [], set()
    for logdir in logdirs:
        if not logdir.is_dir():
            missing.append(logdir)
            continue
        for run_dir in discover_runs(logdir):
            if (real := run_dir.resolve()) in seen:
                continue
            seen.add(real)
            try:
                rows.append(read_run(run_dir))
            except NotARun as why:
                warn(f"skipped {run_dir}: {why}")
    return rows, missing


# ---- grouping and sorting


def _group_key(row: Row) -> tuple:
    settings = {k: v for k, v in row.settings.items() if k not in NOT_A_DIFFERENCE}
    return (row.model, row.recipe, row.status, row.device, json.dumps(settings, sort_keys=True, default=str))


def _common(values: Iterable) -> Any:
    distinct = set(values)
    return distinct.pop() if len(distinct) == 1 else None


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1) of the known values; std None for fewer than two."""
    known = [v for v in values if v is not None]
    if not known:
        return None, None
    return statistics.fmean(known), statistics.stdev(known) if len(known) > 1 else None


def _differences(settings: list[dict[str, Any]]) -> list[str]:
    """For each settings dict, 'key=value' of the keys whose values are not the same in all of them."""
    keys = sorted({k for s in settings for k in s} - NOT_A_DIFFERENCE)
    varying = [k for k in keys if len({json.dumps(s.get(k), default=str) for s in settings}) > 1]
    return [" ".join(f"{k}={s.get(k)}" for k in varying) for s in settings]


def group_rows(rows: Sequence[Row]) -> list[Group]:
    """Fold runs that differ only in seed (same model, recipe, status, device and other settings)."""
    folds: dict[tuple, list[Row]] = {}
    for row in rows:
        folds.setdefault(_group_key(row), []).append(row)
    members = list(folds.values())
    differs = [""] * len(members)
    by_recipe: dict[tuple, list[int]] = {}
    for i, runs in enumerate(members):
        by_recipe.setdefault((runs[0].model, runs[0].recipe), []).append(i)
    for indices in by_recipe.values():
        for i, text in zip(indices, _differences([members[i][0].settings for i in indices])):
            differs[i] = text
    return [Group(model=runs[0].model, recipe=runs[0].recipe, status=runs[0].status, tta=_common(r.tta for r in runs),
                  precision=_common(r.precision for r in runs), device=runs[0].device,
                  epochs=_common(r.epochs for r in runs), seeds=[r.seed for r in runs],
                  stats={f: mean_std([getattr(r, f) for r in runs]) for f in FIGURES}, differs=text)
            for runs, text in zip(members, differs)]


def record(item: Row | Group) -> dict[str, Any]:
    """Column key -> raw value (accuracies as fractions)."""
    if isinstance(item, Row):
        return {c.key: str(item.run_dir) if c.key == "run_dir" else getattr(item, c.key) for c in ROW_COLUMNS}
    values = {c.key: getattr(item, c.key) for c in GROUP_COLUMNS if hasattr(item, c.key)}
    for figure, (mean, std) in item.stats.items():
        values[f"{figure}_mean"], values[f"{figure}_std"] = mean, std
    return {c.key: values[c.key] for c in GROUP_COLUMNS}


def sort_key(column: str, columns: list[Column]) -> str:
    """The record key --sort COLUMN orders by: the column itself, or with --group its mean."""
    keys = [c.key for c in columns]
    for key in (column, f"{column}_mean"):
        if key in keys:
            return key
    if column == "runs":
        raise UserError("--sort runs needs --group: only grouped rows count runs.")
    raise UserError(f"--sort {column} does not apply with --group: sort by one of "
                    f"{', '.join(k.removesuffix('_mean') for k in keys if not k.endswith('_std'))}.")


def sort_records(records: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Stable sort by one record key: accuracies, images/s and runs largest first, others smallest
    first; records without a value last."""
    base = key.removesuffix("_mean")
    known = [r for r in records if r[key] is not None]
    order = natural_key if base == "run_dir" else (lambda v: v)
    known.sort(key=lambda r: order(r[key]), reverse=base in DESCENDING)
    return known + [r for r in records if r[key] is None]


# ---- output formats


def human(value: Any, kind: str) -> str:
    """A value as table and markdown show it: '-' when unknown, accuracies in percent."""
    if value is None or value == []:
        return "-"
    if kind == "acc":
        return f"{100 * value:.2f}%"
    if kind == "seconds":
        return f"{value:.1f}"
    if kind == "rate":
        return f"{value:,.0f}"
    if kind == "list":
        return ",".join("-" if v is None else str(v) for v in value)
    return str(value)


def _shown_columns(columns: list[Column], records: list[dict[str, Any]]) -> list[Column]:
    """Table and markdown leave out 'differs in' when no group differs."""
    return [c for c in columns if c.key != "differs" or any(r[c.key] for r in records)]


def _numeric(column: Column) -> bool:
    return column.kind not in ("text", "list")


def as_table(columns: list[Column], records: list[dict[str, Any]]) -> str:
    columns = _shown_columns(columns, records)
    headers = [c.header for c in columns]
    cells = [[human(r[c.key], c.kind) for c in columns] for r in records]
    for i, column in enumerate(columns):  # numbers right-aligned, with their header, also beside a '-'
        if _numeric(column):
            width = max(len(row[i]) for row in [headers, *cells])
            headers[i] = headers[i].rjust(width)
            for row in cells:
                row[i] = row[i].rjust(width)
    return format_table(headers, cells)


def as_markdown(columns: list[Column], records: list[dict[str, Any]]) -> str:
    columns = _shown_columns(columns, records)

    def line(cells: Iterable[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    rule = "|" + "|".join(" ---: " if _numeric(c) else " --- " for c in columns) + "|"
    return "\n".join([line(c.header for c in columns), rule]
                     + [line(human(r[c.key], c.kind) for c in columns) for r in records])


def as_csv(columns: list[Column], records: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([c.key for c in columns])
    for r in records:
        writer.writerow(["" if r[c.key] is None else
                         " ".join(map(str, r[c.key])) if c.kind == "list" else r[c.key] for c in columns])
    return out.getvalue().rstrip("\n")


def as_json(columns: list[Column], records: list[dict[str, Any]]) -> str:
    return json.dumps([{c.key: r[c.key] for c in columns} for r in records], indent=2)


FORMATTERS = {"table": as_table, "markdown": as_markdown, "csv": as_csv, "json": as_json}


# ---- command line


def build_parser() -> argparse.ArgumentParser:
    parser = CliParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
List every training run under the logdirs, read from each run's metrics.json: model, recipe,
seed, epochs, precision, device, training seconds, images/s, best validation and test accuracy,
the test-time augmentation (tta) the test accuracy was measured with, status and run folder.""",
        epilog="""\
A run is any version_N folder under a LOGDIR, at any depth. Its status is the one its metrics.json
records (finished, failed, ...; finished when it records none). A run without metrics.json is
'unfinished' when it has checkpoints/last.ckpt (stopped, crashed or still training; resume it with
`python -m cifar10.fit --ckpt-path RUN/checkpoints/last.ckpt`) and 'empty' when it has neither;
only its model (the name of the folder above it) is known. A folder whose metrics.json cannot be
read is left out with one line on stderr.

Runs are listed in LOGDIR order, then by path (version_2 before version_10), unless --sort.
Table and markdown show accuracies in percent; csv and json as fractions of 1, unknown values empty
(csv) or null (json). --group's standard deviation is the sample one (n - 1 in the denominator),
unknown ('-', empty, null) for a single run.

Exit status: 0, also when some folder was skipped; 2 for a bad option, or when a LOGDIR does not
exist (the runs of the other LOGDIRs are still listed).""")
    add = parser.add_argument
    add("logdirs", nargs="*", type=Path, default=[Path("lightning_logs")], metavar="LOGDIR",
        help="folders to search for runs, e.g. the --logdir of fit (default lightning_logs)")
    add("--model", action="append", metavar="NAME",
        help="list only the runs of this model; repeat it for several models")
    add("--sort", choices=SORT_KEYS, metavar="COLUMN",
        help="order by this column: test_acc, best_val_acc, train_images_per_s and runs largest first, every "
        f"other column smallest first, unknown values last; with --group by the mean. One of: {', '.join(SORT_KEYS)}")
    add("--format", choices=FORMATS, default="table",
        help="table (aligned text, the default), markdown (a pipe table), csv or json (a list of objects)")
    add("--group", action="store_true",
        help="fold the runs that differ only in their seed into one row: the number of runs, their seeds, and "
        "the mean and standard deviation of test accuracy, best validation accuracy, training seconds and images/s")
    return parser


@exits_cleanly
def main(argv: Sequence[str] | None = None) -> int:
    """The runs-table CLI; prints to stdout, one line per skipped folder on stderr."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    columns = GROUP_COLUMNS if args.group else ROW_COLUMNS
    key = sort_key(args.sort, columns) if args.sort else None
    rows, missing = collect(args.logdirs, warn=lambda line: print(line, file=sys.stderr))
    if args.model:
        kept = [r for r in rows if r.model in args.model]
        if rows and not kept:
            print(f"no runs of {', '.join(args.model)}; the runs found are of "
                  f"{', '.join(sorted({r.model for r in rows}))}", file=sys.stderr)
        rows = kept
    records = [record(item) for item in (group_rows(rows) if args.group else rows)]
    if key:
        records = sort_records(records, key)
    searched = [d for d in args.logdirs if d not in missing]
    if searched:  # nothing to print when no LOGDIR exists
        if not rows and not args.model:
            print(f"no run folders (version_N) under {', '.join(map(str, searched))}", file=sys.stderr)
        print(FORMATTERS[args.format](columns, records))
    if missing:
        raise UserError(f"{', '.join(map(str, missing))}: no such folder, so no runs listed from it. Pass the "
                        "folders runs were written into (fit's --logdir, default lightning_logs).")
    return 0
