"""`python -m cifar10.gpu_check`: check the project's whole GPU path on this machine in a few minutes.

Every check is a command run in a subprocess of its own, with a time limit, so one failure does not stop
the others: the GPU-marked tests, a short fit of every model in bf16-mixed and in 32-bit (and with
torch.compile for a few), evaluate, predict and both exports of a GPU-trained checkpoint with the ONNX
model's top-1 checked against predict's, a 2-GPU DDP fit, and the GPU benchmarks. A table of the
results is printed and written as JSON; the exit code is 1 when any check failed.
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
from cifar10.models import model_names
from cifar10.reporting import format_table

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # where tests/ lives in a source checkout
FIT_BATCHES = 20  # training batches per fit
FIT_VAL_SIZE = 1024  # validation images per fit: a whole number of batches at the recipes' 128, 256 and 1024
COMPILED_MODELS = ("lenet", "resnet18", "speedrun")
CKPT_SOURCE = "fit-lenet-32"  # the fit whose checkpoint evaluate, predict and export use
PNG_COUNT = 8  # test images written as PNG files for predict and the ONNX comparison
TIE = 1e-3  # top-1 and top-2 probabilities closer than this: either class counts as agreeing
DETAIL_LINES = 30  # lines of output kept in the JSON for a failed check
SHOWN_LINES = 5  # of which shown under the table

FIT_TIMEOUT_S, COMPILE_TIMEOUT_S, DDP_TIMEOUT_S = 240, 420, 300
TOOL_TIMEOUT_S, BENCH_TIMEOUT_S, PYTEST_TIMEOUT_S, DATA_TIMEOUT_S = 180, 300, 420, 600


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
    figure: Callable[[str], str | None] = no_figure  # the headline figure from the output of a passing run
    skip: Callable[[], str | None] = never_skip  # why not to run it here (asked just before it would run)
    needs: tuple[str, ...] = ()  # checks that must pass first (else this one is skipped)


@dataclass(frozen=True)
class Completed:
    returncode: int | None  # None when the command was killed at its time limit
    output: str  # stdout and stderr together
    timed_out: bool = False


Runner = Callable[[Sequence[str], float], Completed]


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


def fit_figure(output: str) -> str | None:
    """'acc 31.20%, 45,210 img/s' from fit's summary table."""
    acc = re.search(r"^test accuracy\s+([\d.]+%)", output, re.MULTILINE)
    rate = re.search(r"^images/s\s+([\d,]+)", output, re.MULTILINE)
    parts = ([f"acc {acc.group(1)}"] if acc else []) + ([f"{rate.group(1)} img/s"] if rate else [])
    return ", ".join(parts) or None


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
    return None if torch.cuda.is_bf16_supported() else "this GPU has no bf16"


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
              skip: Callable[[], str | None] = never_skip) -> Check:
    argv = module("cifar10.fit", "--model", model, "--data-dir", data_dir, "--logdir", fit_logdir(work, name),
                  "--accelerator", "gpu", "--max-epochs", 1, "--limit-train-batches", FIT_BATCHES,
                  "--val-size", FIT_VAL_SIZE, *extra)
    return Check(name, argv, timeout_s, fit_figure, skip, needs=("data",))


def fit_checks(data_dir: Path, work: Path) -> list[Check]:
    """Every registered model in bf16-mixed and in 32-bit, and compiled (precision auto) for a few."""
    checks = []
    for model in model_names():
        checks.append(fit_check(f"fit-{model}-bf16", model, data_dir, work,
                                ["--devices", "1", "--precision", "bf16-mixed"], FIT_TIMEOUT_S, needs_bf16))
        checks.append(fit_check(f"fit-{model}-32", model, data_dir, work, ["--devices", "1", "--precision", "32"],
                                FIT_TIMEOUT_S))
    for model in COMPILED_MODELS:
        checks.append(fit_check(f"fit-{model}-compile", model, data_dir, work, ["--devices", "1", "--compile"],
                                COMPILE_TIMEOUT_S))
    return checks


def source_checkpoint(work: Path) -> Path:
    return fit_logdir(work, CKPT_SOURCE) / "lenet" / "version_0" / "checkpoints" / "best.ckpt"


def checkpoint_checks(data_dir: Path, work: Path) -> list[Check]:
    """evaluate, predict and both exports of a GPU-trained checkpoint; the ONNX model against predict."""
    ckpt, images, onnx_file = source_checkpoint(work), work / "images", work / "export" / "model.onnx"
    onnx_missing = needs_module("onnx", "pip install 'cifar10[export]'")
    ort_missing = needs_module("onnxruntime", "pip install 'cifar10[export]'")
    return [
        Check("evaluate", module("cifar10.evaluate", "--ckpt", ckpt, "--data-dir", data_dir, "--accelerator", "gpu",
                                 "--out", work / "report"), TOOL_TIMEOUT_S, evaluate_figure, needs=(CKPT_SOURCE,)),
        Check("predict", module("cifar10.predict", "--ckpt", ckpt, "--json", images), TOOL_TIMEOUT_S,
              needs=(CKPT_SOURCE, "data")),
        Check("export-onnx", module("cifar10.export", "--ckpt", ckpt, "--format", "onnx", "--out", onnx_file),
              TOOL_TIMEOUT_S, skip=onnx_missing, needs=(CKPT_SOURCE,)),
        Check("export-torchscript", module("cifar10.export", "--ckpt", ckpt, "--format", "torchscript", "--out",
                                           work / "export" / "model.ts"), TOOL_TIMEOUT_S, needs=(CKPT_SOURCE,)),
        Check("onnx-vs-predict", call("compare_onnx_with_predict", onnx_file, ckpt, images), TOOL_TIMEOUT_S,
              agreement_figure, skip=ort_missing, needs=("export-onnx", "data")),
    ]


def bench_checks(data_dir: Path) -> list[Check]:
    loops = [Check(f"bench-loop-{model}", module("cifar10.bench", "loop", "--model", model, "--accelerator", "gpu",
                                                 "--batches", 30, "--repeats", 2, "--data-dir", data_dir),
                   BENCH_TIMEOUT_S, loop_figure, needs=("data",)) for model in ("lenet", "resnet18")]
    return loops + [
        Check("bench-data", module("cifar10.bench", "data", "--device", "cuda", "--batches", 20, "--repeats", 1,
                                   "--data-dir", data_dir), BENCH_TIMEOUT_S, data_figure, needs=("data",)),
        Check("bench-layout", module("cifar10.bench", "layout", "--accelerator", "gpu", "--precision", "bf16-mixed",
                                     "--steps", 5, "--repeats", 3), BENCH_TIMEOUT_S, layout_figure, needs_bf16),
    ]


def build_checks(data_dir: Path, work: Path, root: Path = PROJECT_ROOT) -> list[Check]:
    """Every check, in the order they run; `work` receives their runs, images, exports and reports."""
    data_dir, work = Path(data_dir), Path(work)
    return [
        Check("data", call("prepare_images", data_dir, work / "images"), DATA_TIMEOUT_S, data_ready_figure),
        Check("pytest-gpu", module("pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", root / "tests"),
              PYTEST_TIMEOUT_S, pytest_figure, needs_tests(root)),
        *fit_checks(data_dir, work),
        *checkpoint_checks(data_dir, work),
        fit_check("ddp-2gpu", "lenet", data_dir, work, ["--devices", "2", "--strategy", "ddp"], DDP_TIMEOUT_S,
                  needs_two_gpus),
        *bench_checks(data_dir),
    ]


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

def child_env() -> dict[str, str]:
    """This environment, with the project importable from any working folder."""
    paths = [str(PROJECT_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths), PYTHONUNBUFFERED="1")


def run_subprocess(argv: Sequence[str], timeout_s: float) -> Completed:
    """Run argv with stdout and stderr together; at the time limit, kill it and everything it started
    (DDP ranks, DataLoader workers), which share its new process group."""
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            text=True, errors="replace", env=child_env(), start_new_session=True)
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
        completed = runner(check.argv, check.timeout_s)
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
    """Download and extract CIFAR-10 if needed, read it, and write the first test images as PNG files."""
    from PIL import Image

    from cifar10.data import CIFAR10DataModule

    dm = CIFAR10DataModule(data_dir=data_dir, val_size=0, augment="none", normalize="half", on_device=False)
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
    parser = CliParser(
        prog="python -m cifar10.gpu_check", hint="the options",
        description="Check the project's whole GPU path on this machine in a few minutes. "
        + __doc__.split("\n\n")[1].replace("\n", " ") + " Meant to take under 10 minutes on one "
        "recent GPU, CIFAR-10's download included; `make gpu-check DATA_DIR=...` runs it with no venv set-up.",
        epilog="Exit codes: 0 every check passed or was skipped; 1 some check failed; 2 no CUDA GPU is visible "
        "(or bad options). Checks that need a failed or skipped one are skipped.")
    add = parser.add_argument
    add("--data-dir", required=True, metavar="DIR",
        help="CIFAR-10 folder, as for fit (downloaded there when absent)")
    add("--out", default="gpu-check.json", metavar="FILE.json",
        help="where the results are written as JSON (default gpu-check.json)")
    add("--only", nargs="+", metavar="NAME",
        help="run only these checks (names or shell patterns such as 'fit-*'), with the checks they need")
    add("--work-dir", metavar="DIR",
        help="keep the runs, exports, images and reports here (default: a temporary folder, removed at the end)")
    add("--list", action="store_true", help="list the checks and their commands, run nothing")
    return parser


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


def write_report(path: Path, info: dict, results: Sequence[Result], seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    report = info | {"seconds": round(seconds, 1), "checks": [r.as_json() for r in results]}
    path.write_text(json.dumps(report, indent=2) + "\n")


def list_checks(checks: Sequence[Check]) -> None:
    for check in checks:
        print(f"{check.name}: {subprocess.list2cmdline(check.argv)}")


def check_all(args: argparse.Namespace, work: Path, runner: Runner) -> int:
    checks = select(build_checks(Path(args.data_dir), work), args.only)
    info = gpu_info()
    print(f"GPU: {info['device']} (x{info['gpus']}), torch {info['torch']} (CUDA {info['cuda']}), "
          f"lightning {info['lightning']}; {len(checks)} checks", flush=True)
    started = time.perf_counter()
    results = run_checks(checks, runner, lambda line: print(line, flush=True))
    seconds = time.perf_counter() - started
    write_report(Path(args.out), info, results, seconds)
    counts = {status: sum(r.status == status for r in results) for status in ("pass", "fail", "skip")}
    print("\n" + results_table(results) + "\n")
    for line in notes(results):
        print(line)
    print(f"{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped in {seconds:.0f} s; "
          f"results in {args.out}")
    return 1 if counts["fail"] else 0


@exits_cleanly
def main(argv: Sequence[str] | None = None, *, runner: Runner = run_subprocess) -> int:
    """The gpu-check CLI; `runner` runs one check's argv within its time limit (tests pass a fake one)."""
    args = build_parser().parse_args(argv)
    if args.list:
        list_checks(select(build_checks(Path(args.data_dir), Path(args.work_dir or "WORK")), args.only))
        return 0
    require_gpu()
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
