"""`python -m cifar10.gpu_check`: the check list, the executor with a fake runner (and a faked GPU), the
message without a GPU, the real runner's time limit, and the checkpoint checks run for real on the CPU."""

import importlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest
import torch
from helpers_ckpt import tiny_run  # noqa: F401 (tiny_run is a fixture)

from cifar10 import gpu_check
from cifar10.errors import UserError
from cifar10.evaluate import Evaluation, tables
from cifar10.gpu_check import (CKPT_SOURCE, Completed, Result, build_checks, main, run_check, run_checks,
                               run_subprocess, select)
from cifar10.models import model_names
from cifar10.runs.metrics import RunMetrics, write_metrics

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU")
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

LOOP_JSON = {"model": "lenet", "device": "cuda", "lightning_s": 1.03, "plain_s": 1.0, "overhead": 0.0312,
             "lightning_images_per_s": 45210, "plain_images_per_s": 46620}
DATA_JSON = {"preset": "crop-flip", "device": "cuda", "ours_images_per_s": 812345, "torchvision_images_per_s": 9876,
             "speedup": 82.3}
LAYOUT_JSONS = [{"model": "lenet", "speedup": 1.02}, {"model": "resnet18", "speedup": 1.31},
                {"model": "speedrun", "speedup": 1.18}]


def write_fit_run(argv, acc: float = 0.3120, images_per_s: float = 45210.0) -> str:
    """The metrics.json a fit with this command line writes into its first run folder; what it prints last."""
    model, logdir = flags(argv)["--model"], Path(flags(argv)["--logdir"])
    write_metrics(logdir / model / "version_0", RunMetrics(
        model, params=62006, epochs=1, wall_time_s=3.2, train_images_per_s=images_per_s, best_val_acc=0.3,
        test_acc=acc, per_class_acc=dict.fromkeys(CLASSES, acc)))
    return f"Epoch 0: 100%|#####| 20/20 [00:01<00:00]\r\n\nrun folder: {logdir / model / 'version_0'}\n"


def evaluate_output() -> str:
    result = Evaluation(test_acc=0.3120, per_class_acc=dict.fromkeys(CLASSES, 0.312), confusion=[[100] * 10] * 10,
                        n_images=10000, wrong_images=torch.zeros(0), wrong_preds=torch.zeros(0),
                        wrong_targets=torch.zeros(0))
    return tables(result, CLASSES, "none") + "\n\nreport written to /tmp/report\n"


def canned_output(argv) -> str:
    """A plausible output of each kind of check, chosen by its command line."""
    text = " ".join(map(str, argv))
    if "cifar10.bench loop" in text:
        return "run 1: lightning 1.10 s, plain 1.00 s\nlenet (default recipe), ...\n" + json.dumps(LOOP_JSON) + "\n"
    if "cifar10.bench data" in text:
        return "run 1: ours 812,345, ...\n" + json.dumps(DATA_JSON) + "\n"
    if "cifar10.bench layout" in text:
        return "".join(json.dumps(d) + "\n" for d in LAYOUT_JSONS)
    if "cifar10.fit" in text:
        return write_fit_run(argv)
    if "cifar10.evaluate" in text:
        return evaluate_output()
    if "prepare_images" in text:
        return "CIFAR-10 ready\n" + json.dumps({"train": 50000, "test": 10000, "images": "/tmp/images"}) + "\n"
    if "compare_onnx_with_predict" in text:
        return json.dumps({"images": 8, "agree": 8, "max_prob_diff": 1e-6}) + "\n"
    if "pytest" in text:
        return "....s..\nSKIPPED [1] tests/test_x.py:3: why\n6 passed, 1 skipped, 212 deselected in 41.20s\n"
    return "ok\n"


class FakeRunner:
    """Records each call; the checks whose command contains one of `failing` exit 1 with a traceback."""

    def __init__(self, *failing: str) -> None:
        self.failing, self.calls, self.envs = failing, [], []

    def __call__(self, argv, timeout_s, env=None):
        self.calls.append((list(argv), timeout_s))
        self.envs.append(dict(env or {}))
        text = " ".join(map(str, argv))
        if any(needle in text for needle in self.failing):
            return Completed(1, "line\n" * 50 + "Traceback (most recent call last):\nRuntimeError: CUDA error: boom\n")
        return Completed(0, canned_output(argv))


@pytest.fixture
def fake_gpu(monkeypatch):
    """torch sees one bf16-capable GPU named 'Fake GPU'."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(gpu_check, "native_bf16", lambda: True)


def prepared(data_dir: Path) -> Path:
    """A data folder as gpu-check requires it (the fake runner never reads it)."""
    (data_dir / "cifar-10-batches-py").mkdir(parents=True)
    return data_dir


def by_name(results) -> dict:
    return {r["name"] if isinstance(r, dict) else r.name: r for r in results}


def flags(argv) -> dict[str, str]:
    """--flag value pairs of an argv (a flag without a value maps to '')."""
    argv = list(map(str, argv))
    return {a: (argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else "")
            for i, a in enumerate(argv) if a.startswith("--")}


# --- without a GPU -----------------------------------------------------------------------------------------

@no_cuda
def test_without_a_gpu_it_says_so_in_one_line_and_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = FakeRunner()
    assert main(["--data-dir", str(tmp_path / "data")], runner=runner) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and "no CUDA GPU" in err
    assert runner.calls == [] and list(tmp_path.iterdir()) == []  # nothing ran, nothing written


@no_cuda
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_gpu_check_runs_with_the_given_python_and_no_venv(tmp_path):
    root = Path(gpu_check.__file__).resolve().parents[1]
    make = ["make", "-C", str(root), "gpu-check", f"PY={sys.executable}", f"DATA_DIR={tmp_path / 'data'}"]
    planned = subprocess.run(make + ["-n", "--no-print-directory"], capture_output=True, text=True, timeout=60)
    commands = planned.stdout.strip().splitlines()  # one command: no venv is created, nothing installed
    assert planned.returncode == 0 and len(commands) == 1, planned.stdout
    assert f"{sys.executable} -m cifar10.gpu_check --data-dir {tmp_path / 'data'}" in commands[0]
    done = subprocess.run(make, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "error: no CUDA GPU is visible" in done.stderr
    assert not (tmp_path / "data").exists()


# --- the check list ----------------------------------------------------------------------------------------

def test_every_model_is_fitted_on_the_gpu_and_speedrun_past_its_epoch_3(tmp_path):
    checks = by_name(build_checks(tmp_path / "data", tmp_path / "work"))
    for model in model_names():
        f = flags(checks[f"fit-{model}"].argv)
        assert f["--model"] == model and "--precision" not in f and "--compile" not in f  # auto: bf16 where it is
    for model in gpu_check.PRECISION_MODELS:
        assert flags(checks[f"fit-{model}-32"].argv)["--precision"] == "32"
    fits = [c for c in checks.values() if "cifar10.fit" in c.argv]
    speedruns = {"speedrun-sync-debug", "speedrun-compile", "ddp-2gpu"}
    assert len(fits) == len(model_names()) + len(gpu_check.PRECISION_MODELS) + len(speedruns)
    for check in fits:
        f = flags(check.argv)
        assert f["--accelerator"] == "gpu" and int(f["--val-size"]) > 0 and f["--data-dir"] == str(tmp_path / "data")
        assert f["--devices"] == ("2" if check.name == "ddp-2gpu" else "1")
        assert f["--max-epochs"] == ("4" if check.name in speedruns else "1")
        if check.name in speedruns:  # epoch 3 is the whitening bias's last: its code runs at epoch 4's start
            assert f["--model"] == "speedrun" and check.group == "speedrun"
    assert len({flags(c.argv)["--logdir"] for c in fits}) == len(fits)  # each run in its own folder
    assert flags(checks["ddp-2gpu"].argv)["--strategy"] == "ddp" and checks["ddp-2gpu"].gpus == 2
    assert "--compile" in flags(checks["speedrun-compile"].argv)
    assert dict(checks["speedrun-sync-debug"].env) == {"CIFAR10_SYNC_DEBUG": "1"}


def test_groups_fit_a_10_minute_command_the_slowest_first_and_the_whole_under_12_minutes(tmp_path, capsys):
    checks = build_checks(tmp_path / "data", tmp_path / "work")
    minutes = gpu_check.group_minutes(checks)
    assert set(minutes) == set(gpu_check.GROUPS) and all(m <= 6 for m in minutes.values()), minutes
    assert list(minutes.values()) == sorted(minutes.values(), reverse=True)
    assert sum(minutes.values()) < 12
    assert {c.group for c in checks} == set(gpu_check.GROUPS) | {"all"}
    assert list(dict.fromkeys(c.group for c in checks[1:])) == list(minutes)  # they run in that order too
    for group in gpu_check.GROUPS:  # every group's checks find what they need in the group itself
        chosen = gpu_check.in_group(checks, group)
        assert select(chosen, [c.name for c in chosen]) == chosen
        assert sum(c.timeout_s for c in chosen if c.name != "data") >= 60 * minutes[group]
    assert main(["--data-dir", str(tmp_path), "--list"]) == 0
    listed = capsys.readouterr().out
    for group in gpu_check.GROUPS:
        assert f"{group:<9} {minutes[group]:4.1f} min" in listed
    assert "[speedrun] ddp-2gpu:" in listed


def test_checkpoint_tools_and_benchmarks_are_checked(tmp_path):
    checks = by_name(build_checks(tmp_path / "data", tmp_path / "work"))
    ckpt = Path(flags(checks[CKPT_SOURCE].argv)["--logdir"]) / "lenet" / "version_0" / "checkpoints" / "best.ckpt"
    for name in ("evaluate", "predict", "export-onnx", "export-torchscript"):
        assert flags(checks[name].argv)["--ckpt"] == str(ckpt) and CKPT_SOURCE in checks[name].needs
    assert {flags(checks[f"export-{fmt}"].argv)["--format"] for fmt in ("onnx", "torchscript")} == {
        "onnx", "torchscript"}
    assert "--json" in checks["predict"].argv and "export-onnx" in checks["onnx-vs-predict"].needs
    assert flags(checks["evaluate"].argv)["--accelerator"] == "gpu"
    assert "-m" in checks["pytest-gpu"].argv and "gpu" in checks["pytest-gpu"].argv
    for model in ("lenet", "resnet18"):
        f = flags(checks[f"bench-loop-{model}"].argv)
        assert f["--model"] == model and f["--accelerator"] == "gpu" and int(f["--batches"]) <= 50
    assert flags(checks["bench-data"].argv)["--device"] == "cuda"
    assert flags(checks["bench-layout"].argv)["--precision"] == "bf16-mixed"
    assert all(c.timeout_s <= 600 for c in checks.values())


# the modules whose build_parser is the command's, where the command's own module has none
PARSER_MODULES = {"cifar10.bench": "cifar10.bench.__main__", "cifar10.fit": "cifar10.fit_settings"}


def test_every_command_line_is_one_its_command_accepts(tmp_path):
    """The flags of each project command are parsed by that command's own parser (no GPU needed for that)."""
    parsed = 0
    for check in build_checks(tmp_path / "data", tmp_path / "work"):
        if check.argv[1] == "-m" and check.argv[2].startswith("cifar10."):
            name = PARSER_MODULES.get(check.argv[2], check.argv[2])
            importlib.import_module(name).build_parser().parse_args(list(check.argv[3:]))
            parsed += 1
        else:
            assert check.argv[1] == "-c" or check.argv[2] == "pytest", check.argv
    assert parsed == len(build_checks(tmp_path, tmp_path)) - 3  # all but data, pytest-gpu, onnx-vs-predict


def test_only_takes_names_and_patterns_and_adds_what_they_need(tmp_path):
    checks = build_checks(tmp_path / "data", tmp_path / "work")
    assert [c.name for c in select(checks, ["evaluate"])] == ["data", CKPT_SOURCE, "evaluate"]
    assert [c.name for c in select(checks, ["onnx-vs-predict"])] == ["data", CKPT_SOURCE, "export-onnx",
                                                                       "onnx-vs-predict"]
    assert {c.name for c in select(checks, ["fit-*-32"])} == {"data", "fit-lenet-32", "fit-resnet18-32",
                                                              "fit-speedrun-32"}
    assert select(checks, None) == checks
    with pytest.raises(UserError, match="fit-nothing matches no check"):
        select(checks, ["fit-nothing"])


# --- the executor, with a fake runner ------------------------------------------------------------------------

def test_all_passing_prints_the_table_writes_the_json_and_exits_0(tmp_path, capsys, fake_gpu):
    out = tmp_path / "results" / "gpu.json"
    runner = FakeRunner()
    assert main(["--data-dir", str(prepared(tmp_path / "data")), "--out", str(out)], runner=runner) == 0
    report = json.loads(out.read_text())
    assert report["device"] == "Fake GPU" and report["torch"] == torch.__version__ and report["lightning"]
    names = [c.name for c in build_checks(Path("data"), Path("work"))]
    assert [c["name"] for c in report["checks"]] == names
    for check in report["checks"]:
        assert {"name", "status", "seconds", "figure", "detail"} <= set(check)
        assert isinstance(check["seconds"], (int, float)) and check["seconds"] >= 0
    checks = by_name(report["checks"])
    assert checks["ddp-2gpu"]["status"] == "skip" and "needs 2 GPUs" in checks["ddp-2gpu"]["detail"]
    assert {c["status"] for n, c in checks.items() if n != "ddp-2gpu"} == {"pass"}
    assert checks["bench-loop-lenet"]["figure"] == "overhead +3.1%, 45,210 img/s"
    assert checks["bench-data"]["figure"] == "82.3x torchvision, 812,345 img/s"
    assert checks["bench-layout"]["figure"] == "channels-last lenet 1.02x, resnet18 1.31x, speedrun 1.18x"
    assert checks["fit-lenet-32"]["figure"] == "acc 31.20%, 45,210 img/s"
    assert checks["evaluate"]["figure"] == "acc 31.20%"
    assert checks["pytest-gpu"]["figure"] == "6 passed, 1 skipped, 212 deselected"
    assert checks["onnx-vs-predict"]["figure"] == "top-1 8/8 agree"
    assert len(runner.calls) == len(names) - 1  # all but the skipped DDP fit ran
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("check"))
    assert header.split() == ["check", "status", "seconds", "figure"]
    assert any(line.startswith("bench-loop-lenet") and "pass" in line and "overhead +3.1%" in line
               for line in printed.splitlines())
    assert "skipped ddp-2gpu: needs 2 GPUs; this machine has 1" in printed
    assert "[1/" in printed  # progress lines


def test_a_failure_exits_1_is_detailed_and_skips_what_needs_it(tmp_path, capsys, fake_gpu):
    out = tmp_path / "gpu.json"
    runner = FakeRunner("runs/fit-lenet-32")  # its logdir: that fit alone fails
    assert main(["--data-dir", str(prepared(tmp_path / "data")), "--out", str(out)], runner=runner) == 1
    checks = by_name(json.loads(out.read_text())["checks"])
    failed = checks["fit-lenet-32"]
    assert failed["status"] == "fail" and failed["detail"].startswith("exit code 1")
    assert "RuntimeError: CUDA error: boom" in failed["detail"] and len(failed["detail"].splitlines()) <= 31
    for name in ("evaluate", "predict", "export-onnx", "export-torchscript", "onnx-vs-predict"):
        assert checks[name]["status"] == "skip", name
    assert checks["evaluate"]["detail"] == "needs fit-lenet-32, which failed"
    assert checks["onnx-vs-predict"]["detail"] == "needs export-onnx, which was skipped"
    assert checks["fit-lenet"]["status"] == "pass" and checks["bench-data"]["status"] == "pass"
    printed = capsys.readouterr().out
    assert "failed fit-lenet-32: exit code 1" in printed and "RuntimeError: CUDA error: boom" in printed


def test_ddp_runs_with_two_gpus_and_is_skipped_with_one(tmp_path, monkeypatch):
    checks = select(build_checks(tmp_path / "data", tmp_path / "work"), ["ddp-2gpu"])
    for count, status in ((1, "skip"), (2, "pass"), (8, "pass")):
        monkeypatch.setattr(torch.cuda, "device_count", lambda count=count: count)
        runner = FakeRunner()
        results = by_name(run_checks(checks, runner, progress=lambda line: None))
        assert results["ddp-2gpu"].status == status
        ran = [argv for argv, _ in runner.calls if "cifar10.fit" in argv]
        assert len(ran) == (status == "pass")
        assert all(env["CUDA_VISIBLE_DEVICES"] == "0" for env in runner.envs[:-1])  # the data check: one GPU
        if status == "pass":
            assert runner.envs[-1]["CUDA_VISIBLE_DEVICES"] == "0,1"
        if status == "skip":
            assert results["ddp-2gpu"].detail == "needs 2 GPUs; this machine has 1"
        else:
            assert flags(ran[0])["--devices"] == "2" and flags(ran[0])["--strategy"] == "ddp"


def test_a_timeout_is_a_fail(tmp_path):
    check = by_name(build_checks(tmp_path / "data", tmp_path / "work"))["bench-layout"]
    check = gpu_check.Check(check.name, check.argv, 7, check.figure)

    def timing_out(argv, timeout_s, env):
        return Completed(None, "warming up\n", timed_out=True)

    def raising(argv, timeout_s, env):
        raise subprocess.TimeoutExpired(list(argv), timeout_s, output=b"partial output\n")

    for runner, seen in ((timing_out, "warming up"), (raising, "partial output")):
        result = run_check(check, runner, {})
        assert result.status == "fail" and result.detail.startswith("timed out after 7 s") and seen in result.detail
        assert result.figure is None


def test_an_unreadable_figure_does_not_fail_a_passing_check(tmp_path):
    check = by_name(build_checks(tmp_path / "data", tmp_path / "work"))["bench-layout"]
    result = run_check(gpu_check.Check(check.name, check.argv, 10, check.figure), lambda a, t, e: Completed(0, "hi"),
                       {})
    assert result.status == "pass" and result.figure.startswith("?")


def test_figures_are_read_from_the_last_json_line():
    noisy = "Epoch 0: 5%\r10%\r\n{not json}\n" + json.dumps(LOOP_JSON | {"overhead": 0.5}) + "\n" + json.dumps(
        LOOP_JSON) + "\n"
    assert gpu_check.loop_figure(noisy) == "overhead +3.1%, 45,210 img/s"
    assert gpu_check.loop_figure(json.dumps(LOOP_JSON | {"overhead": -0.02})).startswith("overhead -2.0%")
    with pytest.raises(ValueError):
        gpu_check.data_figure("no json here\n")
    assert gpu_check.pytest_figure("x\n===== 3 passed, 1 warning in 2.00s =====\n") == "3 passed, 1 warning"


def test_a_fits_figure_is_read_from_its_metrics_json(tmp_path):
    logdir = tmp_path / "runs" / "fit-lenet"
    figure = gpu_check.fit_figure(logdir, "lenet")
    with pytest.raises(ValueError, match="no run folder"):
        figure("")
    output = write_fit_run(["--model", "lenet", "--logdir", str(logdir)], 0.0975, 1234.5)
    assert figure(output) == "acc 9.75%, 1,234 img/s"
    (logdir / "lenet" / "version_0" / "metrics.json").write_text('{"test_acc": "high"}')
    with pytest.raises(ValueError, match="'test_acc' is 'high', not a finite number"):
        figure(output)


# --- the real runner ---------------------------------------------------------------------------------------

def test_the_runner_returns_the_exit_code_and_both_streams():
    code = "import sys; print('to stdout', flush=True); print('to stderr', file=sys.stderr); sys.exit(3)"
    done = run_subprocess([sys.executable, "-c", code], 60)
    assert done.returncode == 3 and not done.timed_out
    assert "to stdout" in done.output and "to stderr" in done.output


def test_the_runner_kills_a_check_and_what_it_started_at_the_time_limit():
    code = ("import subprocess, sys, time; "
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            "print('started', flush=True); time.sleep(60)")
    started = time.perf_counter()
    done = run_subprocess([sys.executable, "-c", code], 3)
    assert done.timed_out and done.returncode is None and "started" in done.output
    assert time.perf_counter() - started < 30  # the grandchild holding the pipe was killed too


# --- the checkpoint checks, for real on the CPU ---------------------------------------------------------------

@pytest.mark.slow
def test_predict_exports_and_the_onnx_comparison_pass_on_a_real_checkpoint(tiny_run, tmp_path):
    work = tmp_path / "work"
    checks = by_name(build_checks(tiny_run.data_dir, work))
    ckpt = gpu_check.source_checkpoint(work)
    ckpt.parent.mkdir(parents=True)
    shutil.copy(tiny_run.ckpt, ckpt)
    assert gpu_check.prepare_images(str(tiny_run.data_dir), str(work / "images")) == 0
    assert len(list((work / "images").glob("*.png"))) == gpu_check.PNG_COUNT
    done = {"data": Result("data", "pass"), CKPT_SOURCE: Result(CKPT_SOURCE, "pass")}
    for name in ("predict", "export-onnx", "export-torchscript", "onnx-vs-predict"):
        done[name] = run_check(checks[name], run_subprocess, done)
        assert done[name].status == "pass", done[name].detail
    assert done["onnx-vs-predict"].figure == f"top-1 {gpu_check.PNG_COUNT}/{gpu_check.PNG_COUNT} agree"

    # class names in a wrong order: every top-1 class differs from predict's, and the comparison says so
    onnx_file = work / "export" / "model.onnx"
    proto = onnx.load(str(onnx_file))
    onnx.helper.set_model_props(proto, {"class_names": json.dumps(CLASSES[1:] + CLASSES[:1])})
    onnx.save(proto, str(onnx_file))
    result = run_check(checks["onnx-vs-predict"], run_subprocess, done)
    assert result.status == "fail" and "MISMATCH" in result.detail


# --- first contact: prepared data, slices, one JSON file, one GPU per check -----------------------------------

@pytest.fixture
def many_gpus(fake_gpu, monkeypatch):
    """A host with 8 GPUs (and no CUDA_VISIBLE_DEVICES set)."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_without_prepared_data_it_refuses_in_one_line_naming_the_staging(tmp_path, capsys, fake_gpu):
    runner = FakeRunner()
    assert main(["--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "gpu.json")], runner=runner) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no prepared CIFAR-10" in err
    assert "shared/cifar10/README.md" in err and "receive.sh" in err
    assert runner.calls == [] and not (tmp_path / "gpu.json").exists()


def test_each_group_adds_its_results_to_one_json_file(tmp_path, many_gpus):
    data, out = prepared(tmp_path / "data"), tmp_path / "gpu.json"
    names = set()
    for group in gpu_check.GROUPS:
        runner = FakeRunner()
        assert main(["--data-dir", str(data), "--out", str(out), "--group", group], runner=runner) == 0
        names |= {c.name for c in gpu_check.in_group(build_checks(data, tmp_path), group)}
        assert all(env["CUDA_VISIBLE_DEVICES"] == "0" for argv, env in zip(runner.calls, runner.envs)
                   if "ddp" not in " ".join(argv[0]))  # pytest and the benchmarks see one GPU of the eight
    report = json.loads(out.read_text())
    assert [r["group"] for r in report["runs"]] == list(gpu_check.GROUPS)  # in the order they were run here
    assert sorted(c["name"] for c in report["checks"]) == sorted(names)  # data once, each check once
    assert {c["status"] for c in report["checks"]} == {"pass"}  # ddp-2gpu ran: 8 GPUs
