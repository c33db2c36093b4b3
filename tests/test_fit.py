"""The fit CLI end to end on the tiny archive, --help, recipes and --config layering."""

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from cifar10.checkpoint import load_checkpoint
from cifar10.errors import UserError
from cifar10.evaluate import main as evaluate_main
from cifar10.data import CIFAR10DataModule
from cifar10.assembly import make_trainer
from cifar10.fit import main
from cifar10.gpu import native_bf16
from cifar10.fit_settings import given_settings, resolve_settings
from cifar10.settings import Settings, resolve_auto
from cifar10.models import model_info, model_names, recipe

REQUIRED_METRICS = ("model", "params", "epochs", "wall_time_s", "train_images_per_s", "best_val_acc",
                    "test_acc", "per_class_acc", "recipe", "settings", "seed", "precision", "device")


def tiny_fit_args(archive, tmp_path: Path, *extra: str) -> list[str]:
    return ["--data-url", archive.url, "--data-md5", archive.md5, "--data-dir", str(tmp_path / "data"),
            "--model", "lenet", "--max-epochs", "2", "--val-size", "50", "--batch-size", "32",
            "--accelerator", "cpu", "--logdir", str(tmp_path / "logs"), *extra]


def event_tags(run_dir: Path) -> tuple[dict, dict]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events.Tags(), events.PluginTagToContent("hparams")


@pytest.mark.slow
def test_cli_writes_checkpoints_metrics_and_tensorboard(tiny_archive, tmp_path):
    env = os.environ | {"CIFAR10_ALLOW_SUBSET": "1"}
    done = subprocess.run([sys.executable, "-m", "cifar10.fit", *tiny_fit_args(tiny_archive, tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = tmp_path / "logs" / "lenet" / "version_0"
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(REQUIRED_METRICS) <= set(metrics)
    assert metrics["model"] == "lenet" and metrics["epochs"] == 2 and metrics["params"] > 0
    assert metrics["train_images_per_s"] > 0 and 0 <= metrics["test_acc"] <= 1
    assert len(metrics["per_class_acc"]) == 10 and "airplane" in metrics["per_class_acc"]
    assert metrics["settings"]["batch_size"] == 32 and metrics["settings"]["val_size"] == 50
    for label in ("test accuracy", "best validation accuracy", "images/s", "airplane"):
        assert label in done.stdout

    tags, hparams = event_tags(run_dir)
    scalars = set(tags["scalars"])
    assert {"train/loss_step", "train/loss_epoch", "train/acc", "val/loss", "val/acc", "test/acc"} <= scalars
    assert any(tag.startswith("lr") for tag in scalars), scalars
    assert {"train/augmented_images", "test/per_class_accuracy", "test/confusion_matrix",
            "test/misclassified"} <= set(tags["images"])
    start = HParamsPluginData.FromString(hparams["_hparams_/session_start_info"]).session_start_info
    assert {"model", "lr", "batch_size", "seed", "params"} <= set(start.hparams)
    assert not set(start.hparams) & {"data_dir", "data_url", "data_md5", "logdir", "ckpt_path"}  # no paths


def test_help_lists_every_model_with_its_published_accuracy(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--accelerator", "--ckpt-path", "--config", "--limit-train-batches", "--compile", "--logdir"):
        assert flag in out
    for name in model_names():
        assert f"{name} " in out and model_info(name).published in out


def test_without_model_trains_speedrun_with_its_default_recipe():
    settings, resume = resolve_settings(given_settings([]))
    assert resume is None and settings["model"] == "speedrun" and settings["recipe"] == "default"
    assert recipe("speedrun", "default").items() <= settings.items()
    assert settings["data_dir"] == "data" and settings["logdir"] == "lightning_logs"


def test_tutorial_recipe_with_one_flag_overridden():
    settings, _ = resolve_settings(given_settings(["--model", "lenet", "--recipe", "tutorial", "--lr", "0.01"]))
    expected = recipe("lenet", "tutorial") | {"lr": 0.01}
    assert expected.items() <= settings.items()


def test_config_gives_defaults_and_flags_win(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model: lenet\nmax-epochs: 7\nbatch_size: 64\nval-size: 0.1\nnesterov: false\n"
                      "limit_train_batches: 5\n")
    settings, _ = resolve_settings(given_settings(["--config", str(config), "--max-epochs", "3"]))
    assert settings["model"] == "lenet" and settings["max_epochs"] == 3 and settings["batch_size"] == 64
    assert settings["val_size"] == 0.1 and settings["nesterov"] is False and settings["limit_train_batches"] == 5


def test_config_with_an_unknown_key_is_a_user_error(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("lr: 0.1\nlearning_rate: 0.1\n")
    with pytest.raises(UserError, match="learning_rate"):
        given_settings(["--config", str(config)])


def test_val_size_and_limit_train_batches_take_counts_or_fractions():
    given = given_settings(["--val-size", "500", "--limit-train-batches", "0.25"])
    assert given["val_size"] == 500 and isinstance(given["val_size"], int)
    assert given["limit_train_batches"] == 0.25


def test_precision_follows_the_hardware_and_channels_last_is_on_unless_given():
    settings, _ = resolve_settings(given_settings(["--accelerator", "cpu"]))
    assert resolve_auto(settings)["precision"] == "32" and resolve_auto(settings)["channels_last"] is True
    settings, _ = resolve_settings(given_settings(["--accelerator", "cpu", "--precision", "bf16-mixed",
                                                   "--no-channels-last"]))
    assert resolve_auto(settings)["precision"] == "bf16-mixed" and resolve_auto(settings)["channels_last"] is False


def test_multi_node_settings_reach_the_trainer(tmp_path):
    settings, _ = resolve_settings(given_settings(["--accelerator", "cpu", "--devices", "2", "--num-nodes", "3",
                                                   "--strategy", "ddp", "--logdir", str(tmp_path)]))
    trainer = make_trainer(Settings.from_flat(resolve_auto(settings)), TensorBoardLogger(tmp_path), [])
    assert trainer.num_nodes == 3 and trainer.num_devices == 2 and trainer.world_size == 6


def test_cpu_runs_are_deterministic_without_filling_every_new_tensor(tmp_path):
    """Deterministic algorithms (exact resume) without PyTorch's NaN fill of new memory, a debugging aid that
    costs a fifth of a speedrun step on the CPU."""
    settings, _ = resolve_settings(given_settings(["--accelerator", "cpu", "--logdir", str(tmp_path)]))
    torch.utils.deterministic.fill_uninitialized_memory = True  # PyTorch's default
    make_trainer(Settings.from_flat(resolve_auto(settings)), TensorBoardLogger(tmp_path), [])
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.utils.deterministic.fill_uninitialized_memory


@pytest.mark.slow
def test_compiled_run_writes_plain_checkpoints(tiny_archive, tmp_path):
    args = tiny_fit_args(tiny_archive, tmp_path, "--compile", "--max-epochs", "1")
    args[args.index("lenet")] = "mlp"  # the quickest network to compile
    assert main(args) == 0
    run_dir = tmp_path / "logs" / "mlp" / "version_0"
    assert json.loads((run_dir / "metrics.json").read_text())["settings"]["compile"] is True
    model, meta = load_checkpoint(run_dir / "checkpoints" / "best.ckpt")
    assert meta.model == "mlp" and not any("_orig_mod" in key for key in model.state_dict())


def test_with_validation_on_the_test_split_the_final_weights_are_tested(tiny_archive, tmp_path):
    """No checkpoint is picked by its test accuracy: metrics.json's test_acc is that of last.ckpt."""
    args = tiny_fit_args(tiny_archive, tmp_path, "--val-size", "0", "--limit-train-batches", "3")
    args[args.index("lenet")] = "mlp"
    assert main(args) == 0
    run_dir = tmp_path / "logs" / "mlp" / "version_0"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["tested"] == "final weights"
    out = tmp_path / "report"
    assert evaluate_main(["--ckpt", str(run_dir / "checkpoints" / "last.ckpt"), "--data-dir", str(tmp_path / "data"),
                          "--data-url", tiny_archive.url, "--data-md5", tiny_archive.md5, "--out", str(out),
                          "--accelerator", "cpu"]) == 0
    assert json.loads((out / "report.json").read_text())["test_acc"] == pytest.approx(metrics["test_acc"], abs=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_speedrun_on_the_gpu_takes_the_fast_path(tiny_archive, tmp_path):
    """bf16 autocast where the GPU has it, channels-last, the data on the device, lookahead and TTA on the way."""
    args = tiny_fit_args(tiny_archive, tmp_path, "--accelerator", "gpu", "--max-epochs", "5")
    args[args.index("lenet")] = "speedrun"
    assert main(args) == 0
    metrics = json.loads((tmp_path / "logs" / "speedrun" / "version_0" / "metrics.json").read_text())
    assert metrics["device"].startswith("cuda x1") and metrics["settings"]["channels_last"] is True
    assert metrics["precision"] == ("bf16-mixed" if native_bf16() else "32")
    assert metrics["settings"]["tta"] == "flip-shift" and 0 <= metrics["test_acc"] <= 1
    assert torch.load(tmp_path / "logs" / "speedrun" / "version_0" / "checkpoints" / "last.ckpt",
                      weights_only=True)["lookahead"] is not None


def test_settings_split_into_sections_and_back():
    flat, _ = resolve_settings(given_settings(["--model", "lenet", "--data-url", "file:///x.tar.gz", "--lr", "0.01",
                                               "--devices", "2", "--no-channels-last"]))
    s = Settings.from_flat(resolve_auto(flat))
    assert (s.model.lr, s.model.channels_last, s.data.url, s.trainer.devices, s.run.model) == \
        (0.01, False, "file:///x.tar.gz", 2, "lenet")
    assert s.flat() == resolve_auto(flat) | {"config": None}  # every flag in exactly one section (seed in two)
    assert CIFAR10DataModule(s.data).hparams == asdict(s.data)  # the data section is the DataModule's, saved whole
    assert not set(s.hparams_view()) & {"data_dir", "data_url", "data_md5", "logdir", "ckpt_path", "config"}


@pytest.mark.parametrize("flags, devices", [
    ([], 1),  # Lightning's own auto would be every GPU here: a DDP run nobody asked for
    (["--devices", "auto"], 1),
    (["--devices", "3"], 3),
    (["--strategy", "ddp"], "auto"),  # a strategy asks for DDP: every device
    (["--num-nodes", "2"], "auto"),
    (["--devices", "2", "--strategy", "ddp"], 2),
])
def test_devices_are_one_unless_ddp_is_asked_for(flags, devices):
    settings, _ = resolve_settings(given_settings(["--accelerator", "cpu", *flags]))
    assert Settings.from_flat(resolve_auto(settings)).trainer.devices == devices


def test_help_says_devices_default_to_one():
    done = subprocess.run([sys.executable, "-m", "cifar10.fit", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "devices per machine (default 1; auto: every device here, also the default with --strategy" in text


def test_auto_precision_is_bf16_only_where_the_gpu_computes_in_it(monkeypatch):
    """Asked through NVML (no CUDA initialisation in the launching process); a pre-Ampere GPU, which only
    emulates bf16, trains in 32-bit."""
    import cifar10.gpu as gpu
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: pytest.fail("initialises CUDA"))
    settings, _ = resolve_settings(given_settings(["--accelerator", "gpu"]))
    for capability, precision in (((7, 5), "32"), ((8, 0), "bf16-mixed"), ((9, 0), "bf16-mixed")):
        monkeypatch.setattr(gpu, "compute_capability_nvml", lambda index=0, c=capability: c)
        assert resolve_auto(settings)["precision"] == precision, capability


def test_trainer_benchmarks_convolutions_only_on_a_gpu_and_not_when_deterministic(monkeypatch):
    settings, _ = resolve_settings(given_settings(["--accelerator", "cpu"]))
    assert Settings.from_flat(resolve_auto(settings)).trainer.trainer_kwargs()["benchmark"] is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for flags, benchmark in (([], True), (["--deterministic"], False)):
        settings, _ = resolve_settings(given_settings(["--accelerator", "gpu", "--precision", "32", *flags]))
        kwargs = Settings.from_flat(resolve_auto(settings)).trainer.trainer_kwargs()
        assert kwargs["benchmark"] is benchmark and kwargs["deterministic"] is not benchmark


def test_the_sync_debug_guard_is_added_only_when_asked_and_checks_the_first_batch(monkeypatch):
    from cifar10 import gpu
    from cifar10.models import create_model

    monkeypatch.delenv(gpu.SYNC_DEBUG_ENV, raising=False)
    assert gpu.guard_callbacks() == []
    monkeypatch.setenv(gpu.SYNC_DEBUG_ENV, "1")
    assert [type(c) for c in gpu.guard_callbacks()] == [gpu.SyncDebug]
    model = create_model("lenet", channels_last=True)
    labels = torch.zeros(4, dtype=torch.long)
    gpu.check_first_batch(model, (torch.zeros(4, 3, 32, 32, dtype=torch.uint8), labels))  # as the fast path has it
    with pytest.raises(AssertionError, match="float32, not uint8"):
        gpu.check_first_batch(model, (torch.zeros(4, 3, 32, 32), labels))
    conv = next(p for p in model.net.parameters() if p.dim() == 4)
    conv.data = conv.data.contiguous()  # back to NCHW
    with pytest.raises(AssertionError, match="channels-last is set but"):
        gpu.check_first_batch(model, (torch.zeros(4, 3, 32, 32, dtype=torch.uint8), labels))
