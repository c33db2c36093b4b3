"""`python -m cifar10.gpu_check`: check the project's whole GPU path on this machine, in slices.

Every check is a command run in a subprocess of its own, with a time limit, so one failure does not stop
the others: the GPU-marked tests, a short fit of every model (32-bit too for a few, torch.compile for
speedrun), a speedrun fit past its epoch 3 under the sync-debug guard, evaluate, predict and both exports
of a GPU-trained checkpoint with the ONNX model's top-1 checked against predict's, a 2-GPU DDP fit of
speedrun, and the GPU benchmarks. The checks come in groups (slices) that each fit in a 10-minute
command; each run appends its results to one JSON file. The exit code is 1 when any check failed.
"""

import argparse
import fnmatch
import importlib.metadata
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory

import torch

from cifar10.errors import CliParser, UserError, exits_cleanly
from cifar10.files import atomic_write_text
from cifar10.gpu import native_bf16
from cifar10.models import model_names
from cifar10.reporting import format_table
from cifar10.runs import version_dirs
from cifar10.runs.metrics import METRICS_FILE, BadMetrics, read_metrics

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # where tests/ lives in a source checkout
FIT_BATCHES = 20  # training batches per fit
FIT_VAL_SIZE = 1024  # validation images per fit: a whole number of batches at the recipes' 128, 256 and 1024
COMPILED_MODELS = ("lenet", "resnet18", "speedrun")
CKPT_SOURCE = "fit-lenet-32"  # the fit whose checkpoint evaluate, predict and export use
PNG_COUNT = 8  # test images written as PNG files for predict and the ONNX comparison
TIE = 1e-3  # top-1 and top-2 probabilities closer than this: either class counts as agreeing
DETAIL_LINES = 30  # lines of output kept in the JSON for a failed check
SHOWN_LINES = 5  # of which shown under the table

FIT_TIMEOUT_S, COMPILE_TIMEOUT_S, DDP_TIMEOUT_S = 180, 300, 300
TOOL_TIMEOUT_S, BENCH_TIMEOUT_S, PYTEST_TIMEOUT_S, DATA_TIMEOUT_S = 120, 180, 360, 120
PRECISION_MODELS = ("lenet", "resnet18", "speedrun")  # also fitted in 32-bit (the rest at precision auto)
LONG_EPOCHS, LONG_BATCHES = 4, 10  # the speedrun fits that pass its epoch 3 (the whitening bias's last)
STAGING = ("../shared/cifar10/README.md, 'Moving the copy to a GPU machine': stage.sh 1-3 on the development "
           "machine, receive.sh here; it prints the folder to pass")
# Each group runs as one command. The estimates are for one H100 and not measured yet (no GPU has run
# them): a fit process about 15 s (imports, CUDA, reading 50,000 images, 20 steps, the test), the slowest
# group first, about 11 minutes in all.
GROUPS = {"tests": "the gpu-marked tests and the benchmarks",
          "speedrun": "speedrun past epoch 3 (sync-debug guard, compiled), DDP on 2 GPUs",
          "fits": "every model at precision auto, a few in 32-bit",
          "tools": "evaluate, predict and both exports of a GPU-trained checkpoint"}


# --- what a check is, and how its outcome is read ---------------------------------------------------------

def no_figure(output: str) -> str | None:
    return None


def never_skip() -> str | None:
    return None


@dataclass(frozen=True)
class Check:
    name: str
    argv: tuple[str, ...]
    timeout_s: float
    figure: Callable[[str], str | None] = no_figure  # a passing run's headline figure, from its output or files
    skip: Callable[[], str | None] = never_skip  # why not to run it here (asked just before it would run)
    needs: tuple[str, ...] = ()  # checks that must pass first (else this one is skipped)
    group: str = "fits"  # the slice it runs in (GROUPS)
    estimate_s: float = 15.0  # seconds it is expected to take on one H100 (see GROUPS)
    gpus: int = 1  # GPUs it may see (CUDA_VISIBLE_DEVICES): one, so nothing becomes DDP by surprise
    env: tuple[tuple[str, str], ...] = ()  # extra environment variables


@dataclass(frozen=True)
class Completed:
    returncode: int | None  # None when the command was killed at its time limit
    output: str  # stdout and stderr together
    timed_out: bool = False


Runner = Callable[[Sequence[str], float, dict[str, str]], Completed]  # argv, time limit, environment


@dataclass
class Result:
    name: str
    status: str  # pass, fail or skip
    seconds: float = 0.0
    figure: str | None = None
    detail: str | None = None  # failure: the last lines of output; skip: the reason
    command: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        return {"name": self.name, "status": self.status, "seconds": round(self.seconds, 2), "figure": self.figure,
                "detail": self.detail, "command": self.command}


def output_lines(output: str) -> list[str]:
    """Non-empty lines; progress bars' carriage-return updates count as lines of their own."""
    return [line for line in re.split(r"[\r\n]+", output) if line.strip()]


def tail(output: str, n: int = DETAIL_LINES) -> str:
    return "\n".join(output_lines(output)[-n:])


def json_lines(output: str) -> list[dict]:
    """Every line of the output that is a JSON object, in order."""
    found = []
    for line in output_lines(output):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                found.append(value)
    return found


def last_json(output: str) -> dict:
    found = json_lines(output)
    if not found:
        raise ValueError("no JSON line in the output")
    return found[-1]


def fit_figure(logdir: Path, model: str) -> Callable[[str], str | None]:
    """'acc 31.20%, 45,210 img/s', read from the metrics.json of the fit's run (the newest under its logdir)."""
    def figure(output: str) -> str | None:
        folders = version_dirs(logdir, model)
        if not folders:
            raise ValueError(f"no run folder under {logdir / model}")
        try:
            metrics = read_metrics(folders[-1] / METRICS_FILE)
        except BadMetrics as why:
            raise ValueError(str(why)) from None
        parts = ([f"acc {metrics.test_acc:.2%}"] if metrics.test_acc is not None else []) + (
            [f"{metrics.train_images_per_s:,.0f} img/s"] if metrics.train_images_per_s is not None else [])
        return ", ".join(parts) or None
    return figure


def evaluate_figure(output: str) -> str | None:
    found = re.search(r"test accuracy: ([\d.]+%)", output)
    return f"acc {found.group(1)}" if found else None


def pytest_figure(output: str) -> str | None:
    """pytest's summary line without its timing: '7 passed, 40 deselected'."""
    for line in reversed(output_lines(output)):
        if re.search(r"\d+ (passed|failed|skipped|deselected|errors?)\b", line):
            return re.sub(r"\s+in [\d.]+s.*$", "", line.strip("= ")).strip()
    return None


def loop_figure(output: str) -> str:
    d = last_json(output)
    return f"overhead {d['overhead']:+.1%}, {d['lightning_images_per_s']:,} img/s"


def data_figure(output: str) -> str:
    d = last_json(output)
    return f"{d['speedup']}x torchvision, {d['ours_images_per_s']:,} img/s"


def layout_figure(output: str) -> str:
    speedups = [f"{d['model']} {d['speedup']}x" for d in json_lines(output) if "speedup" in d]
    if not speedups:
        raise ValueError("no JSON line in the output")
    return "channels-last " + ", ".join(speedups)


def data_ready_figure(output: str) -> str:
    d = last_json(output)
    return f"{d['train']:,} train, {d['test']:,} test"


def agreement_figure(output: str) -> str:
    d = last_json(output)
    return f"top-1 {d['agree']}/{d['images']} agree"


# --- skip conditions ----------------------------------------------------------------------------------------

def needs_two_gpus() -> str | None:
    count = torch.cuda.device_count()
    return None if count >= 2 else f"needs 2 GPUs; this machine has {count}"


def needs_bf16() -> str | None:
    return None if native_bf16() else "this GPU does not compute in bf16 (compute capability below 8.0)"


def needs_module(module: str, hint: str) -> Callable[[], str | None]:
    def reason() -> str | None:
        return None if importlib.util.find_spec(module) else f"{module} is not installed ({hint})"
    return reason


def needs_tests(root: Path) -> Callable[[], str | None]:
    def reason() -> str | None:
        if not (root / "tests").is_dir():
            return f"no tests/ folder in {root} (an installed package, not a source checkout)"
        return needs_module("pytest", "pip install pytest")()
    return reason


# --- the checks ---------------------------------------------------------------------------------------------

def module(name: str, *args: str | Path) -> tuple[str, ...]:
    return (sys.executable, "-m", name, *map(str, args))


def call(function: str, *args: str | Path) -> tuple[str, ...]:
    """argv that runs `function(*args)` of this module in a fresh interpreter and exits with what it returns."""
    code = f"import sys; from cifar10.gpu_check import {function}; sys.exit({function}(*sys.argv[1:]))"
    return (sys.executable, "-c", code, *map(str, args))


def fit_logdir(work: Path, name: str) -> Path:
    return work / "runs" / name


def fit_check(name: str, model: str, data_dir: Path, work: Path, extra: Sequence[str], timeout_s: float,
              skip: Callable[[], str | None] = never_skip, epochs: int = 1, batches: int = FIT_BATCHES,
              **fields) -> Check:
    logdir = fit_logdir(work, name)
    argv = module("cifar10.fit", "--model", model, "--data-dir", data_dir, "--logdir", logdir,
                  "--accelerator", "gpu", "--max-epochs", epochs, "--limit-train-batches", batches,
                  "--val-size", FIT_VAL_SIZE, *extra)
    return Check(name, argv, timeout_s, fit_figure(logdir, model), skip, needs=("data",), **fields)


def fit_checks(data_dir: Path, work: Path) -> list[Check]:
    """Every registered model at precision auto (bf16 where the GPU has it), a few in 32-bit."""
    checks = [fit_check(f"fit-{model}", model, data_dir, work, ["--devices", "1"], FIT_TIMEOUT_S)
              for model in model_names()]
    checks += [fit_check(f"fit-{model}-32", model, data_dir, work, ["--devices", "1", "--precision", "32"],
                         FIT_TIMEOUT_S, group="tools" if model == "lenet" else "fits")
               for model in PRECISION_MODELS]
    return checks


def speedrun_checks(data_dir: Path, work: Path) -> list[Check]:
    """speedrun past its epoch 3: under the sync-debug guard, compiled, and under DDP on 2 GPUs."""
    long = {"epochs": LONG_EPOCHS, "batches": LONG_BATCHES, "group": "speedrun"}
    return [
        fit_check("speedrun-sync-debug", "speedrun", data_dir, work, ["--devices", "1"], FIT_TIMEOUT_S,
                  env=(("CIFAR10_SYNC_DEBUG", "1"),), estimate_s=30, **long),
        fit_check("speedrun-compile", "speedrun", data_dir, work, ["--devices", "1", "--compile"],
                  COMPILE_TIMEOUT_S, estimate_s=100, **long),
        fit_check("ddp-2gpu", "speedrun", data_dir, work, ["--devices", "2", "--strategy", "ddp"], DDP_TIMEOUT_S,
                  needs_two_gpus, gpus=2, estimate_s=45, **long),
    ]


def source_checkpoint(work: Path) -> Path:
    return fit_logdir(work, CKPT_SOURCE) / "lenet" / "version_0" / "checkpoints" / "best.ckpt"


def checkpoint_checks(data_dir: Path, work: Path) -> list[Check]:
    """evaluate, predict and both exports of a GPU-trained checkpoint; the ONNX model against predict."""
    ckpt, images, onnx_file = source_checkpoint(work), work / "images", work / "export" / "model.onnx"
    onnx_missing = needs_module("onnx", "pip install 'cifar10[export]'")
    ort_missing = needs_module("onnxruntime", "pip install 'cifar10[export]'")
    tool = {"group": "tools", "estimate_s": 10}
    return [
        Check("evaluate", module("cifar10.evaluate", "--ckpt", ckpt, "--data-dir", data_dir, "--accelerator", "gpu",
                                 "--out", work / "report"), TOOL_TIMEOUT_S, evaluate_figure, needs=(CKPT_SOURCE,),
              **tool),
        Check("predict", module("cifar10.predict", "--ckpt", ckpt, "--json", images), TOOL_TIMEOUT_S,
              needs=(CKPT_SOURCE, "data"), **tool),
        Check("export-onnx", module("cifar10.export", "--ckpt", ckpt, "--format", "onnx", "--out", onnx_file),
              TOOL_TIMEOUT_S, skip=onnx_missing, needs=(CKPT_SOURCE,), **tool),
        Check("export-torchscript", module("cifar10.export", "--ckpt", ckpt, "--format", "torchscript", "--out",
                                           work / "export" / "model.ts"), TOOL_TIMEOUT_S, needs=(CKPT_SOURCE,),
              **tool),
        Check("onnx-vs-predict", call("compare_onnx_with_predict", onnx_file, ckpt, images), TOOL_TIMEOUT_S,
              agreement_figure, skip=ort_missing, needs=("export-onnx", "data"), **tool),
    ]


def bench_checks(data_dir: Path) -> list[Check]:
    bench = {"group": "tests", "estimate_s": 30}
    loops = [Check(f"bench-loop-{model}", module("cifar10.bench", "loop", "--model", model, "--accelerator", "gpu",
                                                 "--batches", 30, "--repeats", 2, "--data-dir", data_dir),
                   BENCH_TIMEOUT_S, loop_figure, needs=("data",), **bench) for model in ("lenet", "resnet18")]
    return loops + [
        Check("bench-data", module("cifar10.bench", "data", "--device", "cuda", "--batches", 20, "--repeats", 1,
                                   "--data-dir", data_dir), BENCH_TIMEOUT_S, data_figure, needs=("data",),
              **bench | {"estimate_s": 20}),
        Check("bench-layout", module("cifar10.bench", "layout", "--accelerator", "gpu", "--precision", "bf16-mixed",
                                     "--steps", 5, "--repeats", 3), BENCH_TIMEOUT_S, layout_figure, needs_bf16,
              **bench),
    ]


def build_checks(data_dir: Path, work: Path, root: Path = PROJECT_ROOT) -> list[Check]:
    """Every check, group by group (the slowest group first); `work` receives their runs, images, exports
    and reports. `data` comes first and belongs to every group (each needs it)."""
    data_dir, work = Path(data_dir), Path(work)
    checks = [
        *speedrun_checks(data_dir, work),
        *fit_checks(data_dir, work),
        Check("pytest-gpu", module("pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", root / "tests"),
              PYTEST_TIMEOUT_S, pytest_figure, needs_tests(root), group="tests", estimate_s=90),
        *bench_checks(data_dir),
        *checkpoint_checks(data_dir, work),
    ]
    data = Check("data", call("prepare_images", data_dir, work / "images"), DATA_TIMEOUT_S, data_ready_figure,
                 group="all", estimate_s=10)
    order = {group: i for i, group in enumerate(group_minutes([data, *checks]))}
    return [data, *sorted(checks, key=lambda c: order[c.group])]


def group_minutes(checks: Sequence[Check]) -> dict[str, float]:
    """Estimated minutes of each group on one H100 (its checks and the data check), the slowest first."""
    data = sum(c.estimate_s for c in checks if c.group == "all")
    minutes = {g: (data + sum(c.estimate_s for c in checks if c.group == g)) / 60 for g in GROUPS}
    return dict(sorted(minutes.items(), key=lambda item: -item[1]))


def in_group(checks: list[Check], group: str | None) -> list[Check]:
    if group is None:
        return list(checks)
    return [c for c in checks if c.group in (group, "all")]


def select(checks: list[Check], patterns: Sequence[str] | None) -> list[Check]:
    """The checks named by `patterns` (names or shell patterns such as 'fit-*') and those they need."""
    if not patterns:
        return list(checks)
    by_name = {c.name: c for c in checks}
    unmatched = [p for p in patterns if not fnmatch.filter(by_name, p)]
    if unmatched:
        raise UserError(f"--only {' '.join(unmatched)} matches no check. The checks: {', '.join(by_name)}.")
    wanted = {name for p in patterns for name in fnmatch.filter(by_name, p)}
    pending = list(wanted)
    while pending:
        for need in by_name[pending.pop()].needs:
            if need not in wanted:
                wanted.add(need)
                pending.append(need)
    return [c for c in checks if c.name in wanted]


# --- running ------------------------------------------------------------------------------------------------

def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment, with the project importable from any working folder, and `extra`."""
    paths = [str(PROJECT_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths), PYTHONUNBUFFERED="1", **(extra or {}))


def visible_gpus(count: int) -> str:
    """CUDA_VISIBLE_DEVICES for a check that may see `count` GPUs: the first of those this process sees."""
    seen = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return ",".join((seen or [str(i) for i in range(max(count, torch.cuda.device_count()))])[:count])


def check_env(check: Check) -> dict[str, str]:
    """What a check's process adds to the environment: its GPUs (on a multi-GPU host pytest and the
    benchmarks must not see more than one) and its own variables."""
    return {"CUDA_VISIBLE_DEVICES": visible_gpus(check.gpus), **dict(check.env)}


def run_subprocess(argv: Sequence[str], timeout_s: float, env: dict[str, str] | None = None) -> Completed:
    """Run argv with stdout and stderr together; at the time limit, kill it and everything it started
    (DDP ranks, DataLoader workers), which share its new process group."""
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            text=True, errors="replace", env=child_env(env), start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout_s)
        return Completed(proc.returncode, output)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        output, _ = proc.communicate()
        return Completed(None, output or "", timed_out=True)
    except BaseException:  # Ctrl-C: the checks run in their own session, so stop them here
        kill_group(proc)
        proc.communicate()
        raise


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def blocked_by(check: Check, done: dict[str, Result]) -> str | None:
    for need in check.needs:
        result = done.get(need)
        if result is None:
            return f"needs {need}, which did not run"
        if result.status != "pass":
            return f"needs {need}, which " + ("failed" if result.status == "fail" else "was skipped")
    return None


def run_check(check: Check, runner: Runner, done: dict[str, Result]) -> Result:
    command = list(check.argv)
    reason = blocked_by(check, done) or check.skip()
    if reason:
        return Result(check.name, "skip", detail=reason, command=command)
    started = time.perf_counter()
    try:
        completed = runner(check.argv, check.timeout_s, check_env(check))
    except subprocess.TimeoutExpired as err:
        partial = err.output or ""
        completed = Completed(None, partial.decode(errors="replace") if isinstance(partial, bytes) else partial,
                              timed_out=True)
    seconds = time.perf_counter() - started
    if completed.timed_out:
        detail = f"timed out after {check.timeout_s:g} s\n" + tail(completed.output)
        return Result(check.name, "fail", seconds, detail=detail.rstrip(), command=command)
    if completed.returncode != 0:
        detail = f"exit code {completed.returncode}\n" + tail(completed.output)
        return Result(check.name, "fail", seconds, detail=detail.rstrip(), command=command)
    try:
        figure = check.figure(completed.output)
    except (ValueError, KeyError, TypeError) as err:
        figure = f"? ({err})"
    return Result(check.name, "pass", seconds, figure, command=command)


def run_checks(checks: Sequence[Check], runner: Runner = run_subprocess,
               progress: Callable[[str], None] = print) -> list[Result]:
    done: dict[str, Result] = {}
    for i, check in enumerate(checks, 1):
        counter = f"[{i}/{len(checks)}]"
        progress(f"{counter} {check.name} ...")
        result = run_check(check, runner, done)
        done[check.name] = result
        if result.status == "skip":
            progress(f"{counter} {check.name}: skip ({result.detail})")
        else:
            figure = f": {result.figure}" if result.figure else ""
            progress(f"{counter} {check.name}: {result.status} in {result.seconds:.1f} s{figure}")
    return list(done.values())


# --- helpers that run as checks (through `call`) ------------------------------------------------------------

@exits_cleanly
def prepare_images(data_dir: str, images_dir: str, count: str | int = PNG_COUNT) -> int:
    """Read the prepared CIFAR-10 copy (extracting an archive placed there if need be) and write the first
    test images as PNG files."""
    from PIL import Image

    from cifar10.data import CIFAR10DataModule

    dm = CIFAR10DataModule.from_keywords(data_dir=data_dir, val_size=0, augment="none", normalize="half", on_device=False)
    dm.prepare_data()
    dm.setup("fit")  # every split: the check reports both sizes
    out = Path(images_dir)
    out.mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(dm.test_images[:int(count)], dm.test_labels.tolist())):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(out / f"{i:02d}-{dm.class_names[label]}.png")
    print(f"CIFAR-10 ready in {dm.data_dir}; wrote {min(int(count), len(dm.test_labels))} test images to {out}")
    print(json.dumps({"train": len(dm.train_labels), "test": len(dm.test_labels), "images": str(out)}))
    return 0


def predict_json(ckpt: str | Path, images_dir: str | Path) -> list[dict]:
    """What `python -m cifar10.predict --json --top-k 2` prints for the images, run as a user would."""
    done = subprocess.run(list(module("cifar10.predict", "--ckpt", ckpt, "--json", "--top-k", 2, images_dir)),
                          capture_output=True, text=True, env=child_env(), timeout=TOOL_TIMEOUT_S)
    if done.returncode != 0:
        raise UserError(f"predict failed (exit code {done.returncode}): {tail(done.stderr, 10)}")
    return json.loads(done.stdout)


def onnx_probabilities(onnx_file: str | Path, files: list[Path]) -> tuple[list[str], torch.Tensor]:
    """(class names from the file's metadata, softmax of its logits) for images scaled to [0, 1], on the CPU."""
    import onnxruntime

    from cifar10.predict import read_image

    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    class_names = json.loads(session.get_modelmeta().custom_metadata_map["class_names"])
    images = torch.stack([read_image(f) for f in files]).float().div(255).numpy()
    logits = session.run(None, {session.get_inputs()[0].name: images})[0]
    return class_names, torch.softmax(torch.from_numpy(logits), dim=1)


def agrees(top: list[dict], onnx_class: str) -> bool:
    """ONNX's top-1 is predict's, or predict's runner-up when the two are within TIE of each other."""
    if onnx_class == top[0]["class"]:
        return True
    return len(top) > 1 and top[0]["prob"] - top[1]["prob"] < TIE and onnx_class == top[1]["class"]


@exits_cleanly
def compare_onnx_with_predict(onnx_file: str, ckpt: str, images_dir: str) -> int:
    """Exit 0 when the exported ONNX model's top-1 class is predict's for every PNG in images_dir."""
    files = sorted(Path(images_dir).glob("*.png"))
    if not files:
        raise UserError(f"no PNG images in {images_dir}")
    predicted = {Path(r["file"]).name: r["top"] for r in predict_json(ckpt, images_dir)}
    class_names, probs = onnx_probabilities(onnx_file, files)
    agree, worst = 0, 0.0
    for file, row in zip(files, probs):
        top = predicted[file.name]
        onnx_class = class_names[int(row.argmax())]
        worst = max(worst, abs(float(row[class_names.index(top[0]["class"])]) - top[0]["prob"]))
        ok = agrees(top, onnx_class)
        agree += ok
        print(f"{file.name}: predict {top[0]['class']} ({top[0]['prob']:.4f}), onnx {onnx_class} "
              f"({float(row.max()):.4f})" + ("" if ok else "  MISMATCH"))
    print(json.dumps({"images": len(files), "agree": agree, "max_prob_diff": round(worst, 6)}))
    if agree < len(files) or worst > TIE:
        print(f"the ONNX model disagrees with predict: {len(files) - agree} top-1 mismatches, "
              f"probabilities up to {worst:.2g} apart", file=sys.stderr)
        return 1
    return 0


# --- the command --------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    groups = ", ".join(GROUPS)
    parser = CliParser(
        prog="python -m cifar10.gpu_check", hint="the options",
        description="Check the project's whole GPU path on this machine. "
        + __doc__.split("\n\n")[1].replace("\n", " ") + f" Run one group at a time ({groups}; --list shows "
        "each with its checks and estimated minutes), each as one command; `make gpu-check DATA_DIR=... "
        "ARGS='--group fits'` runs it with no venv set-up.",
        epilog="Exit codes: 0 every check passed or was skipped; 1 some check failed; 2 no CUDA GPU is visible, "
        "no prepared CIFAR-10 in --data-dir, or bad options. Checks that need a failed or skipped one are skipped.")
    add = parser.add_argument
    add("--data-dir", required=True, metavar="DIR",
        help="a prepared CIFAR-10 folder (holding cifar-10-batches-py/); nothing is downloaded")
    add("--out", default="gpu-check.json", metavar="FILE.json",
        help="the JSON file each run adds its results to (default gpu-check.json)")
    add("--group", choices=GROUPS, help="run this group of checks (default: all, which may outlast one 10-minute "
        "command)")
    add("--only", nargs="+", metavar="NAME",
        help="run only these checks (names or shell patterns such as 'fit-*'), with the checks they need")
    add("--work-dir", metavar="DIR",
        help="keep the runs, exports, images and reports here (default: a temporary folder, removed at the end)")
    add("--list", action="store_true", help="list the groups, their estimated minutes and their checks; run nothing")
    return parser


def require_data(data_dir: Path) -> None:
    """gpu-check never downloads: on a GPU host without network that would wait, then skip every check."""
    if not (data_dir / "cifar-10-batches-py").is_dir():
        raise UserError(f"no prepared CIFAR-10 in {data_dir} (no cifar-10-batches-py/ folder there), so nothing "
                        f"was run. Put the copy on this machine first ({STAGING}) and pass that folder as "
                        "--data-dir (make gpu-check DATA_DIR=...).")


def gpu_info() -> dict:
    return {"device": torch.cuda.get_device_name(0), "gpus": torch.cuda.device_count(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "lightning": importlib.metadata.version("lightning")}


def require_gpu() -> None:
    if not torch.cuda.is_available():
        raise UserError(f"no CUDA GPU is visible to PyTorch {torch.__version__} here, so there is nothing to check: "
                        "run gpu-check on a machine with an NVIDIA GPU, its driver and a CUDA build of PyTorch.")


def results_table(results: Sequence[Result]) -> str:
    return format_table(["check", "status", "seconds", "figure"],
                        [[r.name, r.status, f"{r.seconds:.1f}", r.figure or "-"] for r in results])


def notes(results: Sequence[Result]) -> list[str]:
    """A reason line per skipped check and the last lines of output per failed one."""
    lines = []
    for r in results:
        if r.status == "skip":
            lines.append(f"skipped {r.name}: {r.detail}")
        elif r.status == "fail":
            shown = (r.detail or "").splitlines()
            lines.append(f"failed {r.name}: {shown[0] if shown else ''}")
            lines += [f"    {line}" for line in shown[1:][-SHOWN_LINES:]]
    return lines


def write_report(path: Path, info: dict, results: Sequence[Result], seconds: float, group: str | None) -> None:
    """Add this run to the JSON file: its checks replace earlier results of the same name, and `runs` lists
    every run (group, seconds), so the slices of one machine end in one file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        report = {}
    if not isinstance(report, dict) or not isinstance(report.get("checks"), list):
        report = {}
    new = {r.name for r in results}
    checks = [c for c in report.get("checks", []) if isinstance(c, dict) and c.get("name") not in new]
    runs = report.get("runs") if isinstance(report.get("runs"), list) else []
    report = info | {"seconds": round(sum(r.get("seconds", 0) for r in runs) + seconds, 1),
                     "runs": runs + [{"group": group or "all", "seconds": round(seconds, 1)}],
                     "checks": checks + [r.as_json() for r in results]}
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")


def list_checks(checks: Sequence[Check]) -> None:
    minutes = group_minutes(checks)
    print(f"groups (estimated minutes on one H100, {sum(minutes.values()):.0f} in all; the data check runs in each):")
    for group, group_min in minutes.items():
        print(f"  {group:<9} {group_min:4.1f} min  {GROUPS[group]}")
    for check in checks:
        print(f"[{check.group}] {check.name}: {subprocess.list2cmdline(check.argv)}")


def check_all(args: argparse.Namespace, work: Path, runner: Runner) -> int:
    checks = select(in_group(build_checks(Path(args.data_dir), work), args.group), args.only)
    info = gpu_info()
    print(f"GPU: {info['device']} (x{info['gpus']}), torch {info['torch']} (CUDA {info['cuda']}), "
          f"lightning {info['lightning']}; {len(checks)} checks", flush=True)
    started = time.perf_counter()
    results = run_checks(checks, runner, lambda line: print(line, flush=True))
    seconds = time.perf_counter() - started
    write_report(Path(args.out), info, results, seconds, args.group)
    counts = {status: sum(r.status == status for r in results) for status in ("pass", "fail", "skip")}
    print("\n" + results_table(results) + "\n")
    for line in notes(results):
        print(line)
    print(f"{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped in {seconds:.0f} s; "
          f"results added to {args.out}")
    return 1 if counts["fail"] else 0


@exits_cleanly
def main(argv: Sequence[str] | None = None, *, runner: Runner = run_subprocess) -> int:
    """The gpu-check CLI; `runner` runs one check's argv within its time limit (tests pass a fake one)."""
    args = build_parser().parse_args(argv)
    if args.list:
        checks = build_checks(Path(args.data_dir), Path(args.work_dir or "WORK"))
        list_checks(select(in_group(checks, args.group), args.only))
        return 0
    require_gpu()
    require_data(Path(args.data_dir))
    try:
        if args.work_dir:
            return check_all(args, Path(args.work_dir).resolve(), runner)
        with TemporaryDirectory(prefix="cifar10-gpu-check-") as work:
            return check_all(args, Path(work), runner)
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
