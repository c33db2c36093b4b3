"""Time `speedrun` to its test accuracy over several seeds, beside airbench94 on the same device and data.

Ours runs as `python -m cifar10.fit --model speedrun --accelerator gpu --seed S` does; its time is the
training time the fit records (`train_time_s`: training steps only, no validation or test) and its
accuracy is the fit's test accuracy, with the recipe's flip-shift test-time augmentation. airbench94
(`pip install airbench`) trains through its own `train94` on the same images, which this benchmark
writes in the layout airbench's loader reads; its time is the wall time of `train94` (whitening and
training, no evaluation) and its accuracy is reported with its TTA level 2 (the same flip-shift, as it
publishes) and without. One untimed warm-up run of each comes first, then the seeds alternate between
the two. (airbench trains 9.9 epochs of 48 full batches, 476 steps; ours 10 epochs of 49 batches, the
last one partial, 490 steps.)

`--accelerator cpu` runs both in 32-bit on the CPU (airbench94's own code, its CUDA calls pointed at the
CPU, as in `bench airbench-cpu`), where a full run takes over an hour: `--steps N` then times the first N training steps of each, for
their time per step side by side (the accuracy after so few steps means nothing).
"""

import argparse
import contextlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch
from torch import nn

from cifar10 import fit
from cifar10.data import CIFAR10DataModule
from cifar10.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default="data", help="folder holding (or to receive) cifar-10-batches-py")
    parser.add_argument("--seeds", type=int, default=5, help="runs per side, seeds 0..N-1")
    parser.add_argument("--compare", choices=("airbench",), help="also run airbench94 on the same device and data")
    parser.add_argument("--fit-args", default="", help="extra fit flags for our side, e.g. '--compile'")
    parser.add_argument("--accelerator", choices=("gpu", "cpu"), default="gpu",
                        help="gpu (default): ours as fit runs it there, airbench94 in its 16-bit; cpu: both in 32-bit")
    parser.add_argument("--steps", type=int, default=None,
                        help="train only the first N steps of each (default: the whole run); for a CPU timing")


def require_cuda() -> None:
    if not torch.cuda.is_available():
        raise UserError("the speedrun benchmark times training on a GPU by default, and PyTorch sees no CUDA GPU "
                        "here. Run it on a machine with an NVIDIA GPU, or add `--accelerator cpu --steps 10` to "
                        "time the first 10 steps of each on this CPU (whole runs take over an hour each here).")


def import_airbench():
    try:
        import airbench
    except ImportError:
        raise UserError("airbench is not installed: `pip install airbench==0.1.8` (`make install` does; or install its "
                        "wheel on a machine without internet), then run again.") from None
    return airbench


def ours(data_dir: str, seed: int, logdir: Path, extra: list[str], accelerator: str = "gpu") -> dict:
    args = ["--model", "speedrun", "--accelerator", accelerator, "--data-dir", data_dir, "--seed", str(seed),
            "--logdir", str(logdir), *extra]
    if fit.main(args) != 0:
        raise UserError(f"our speedrun fit failed: python -m cifar10.fit {' '.join(args)}")
    run = sorted((logdir / "speedrun").iterdir(), key=lambda p: int(p.name.split("_")[1]))[-1]
    metrics = json.loads((run / "metrics.json").read_text())
    return {"acc": metrics["test_acc"], "train_s": metrics["train_time_s"], "wall_s": metrics["wall_time_s"]}


def write_airbench_data(dm: CIFAR10DataModule, folder: Path) -> None:
    """The images as airbench's CifarLoader caches them: {images uint8 (N, 32, 32, 3), labels, classes}."""
    folder.mkdir(parents=True, exist_ok=True)
    train_images = torch.cat([dm.train_images, dm.val_images]) if dm.val_images is not None else dm.train_images
    train_labels = torch.cat([dm.train_labels, dm.val_labels]) if dm.val_labels is not None else dm.train_labels
    for name, images, labels in (("train.pt", train_images, train_labels), ("test.pt", dm.test_images, dm.test_labels)):
        torch.save({"images": images.permute(0, 2, 3, 1).contiguous().cpu(), "labels": labels.cpu(),
                    "classes": list(dm.class_names)}, folder / name)


def prepare_airbench_data(data_dir: str, folder: Path) -> None:
    """All 50,000 training and the 10,000 test images of data_dir, written for airbench into folder."""
    dm = CIFAR10DataModule(data_dir=data_dir, val_size=0)
    dm.prepare_data()
    dm.setup("fit")
    write_airbench_data(dm, folder)


def airbench94(airbench, folder: Path, seed: int, epochs: float | None = None, steps: int | None = None,
               verbose: bool = False) -> dict:
    """One airbench94 training from the data in folder/cifar10 (airbench reads its test set from ./cifar10).

    The loaders come from airbench.utils, where `on_cpu` swaps in a CPU loader.
    epochs: airbench's train_epochs (None: its 9.9); steps: train only that many steps (overrides epochs);
    verbose: print airbench's per-epoch table.
    """
    from airbench.lib_airbench94 import hyp
    loader = airbench.utils.CifarLoader
    train_loader = loader(str(folder / "cifar10"), train=True, batch_size=hyp["opt"]["batch_size"],
                          aug=hyp["aug"], altflip=True)
    test_loader = loader(str(folder / "cifar10"), train=False, batch_size=2000)
    if epochs is None:
        epochs = hyp["opt"]["train_epochs"]
    if steps is not None:
        epochs = (steps - 0.5) / len(train_loader)  # airbench trains ceil(len(train_loader) * epochs) steps
    torch.manual_seed(seed)
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        torch.cuda.synchronize()
        started = time.perf_counter()
        model = airbench.train94(train_loader, epochs=epochs, verbose=verbose)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - started
    finally:
        os.chdir(cwd)
    return {"acc": airbench.evaluate(model, test_loader, tta_level=0),
            "acc_tta": airbench.evaluate(model, test_loader, tta_level=hyp["net"]["tta_level"]), "train_s": seconds}


class WallClockEvent:
    """torch.cuda.Event's timing interface, on the wall clock."""

    def __init__(self, **_) -> None:
        self.at = 0.0

    def record(self) -> None:
        self.at = time.perf_counter()

    def elapsed_time(self, end: "WallClockEvent") -> float:
        return 1e3 * (end.at - self.at)


def cpu_loader_class(airbench):
    class CpuFloatLoader(airbench.CifarLoader):
        """airbench's loader with its tensors on the CPU in float32 (it loads them to cuda:0 in float16)."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **{**kwargs, "gpu": "cpu"})
            self.images = self.images.float()
    return CpuFloatLoader


@contextlib.contextmanager
def on_cpu(airbench):
    """airbench's loader, its net's .cuda()/.half() and torch.cuda's timing calls pointed at the CPU in 32-bit.

    airbench (0.1.8) runs only on CUDA in 16-bit; inside this block its own code trains on the CPU, unchanged.
    """
    keep_on_cpu = lambda module, *args, **kwargs: module  # noqa: E731  (.cuda() and .half() of the net)
    with mock.patch.object(airbench.utils, "CifarLoader", cpu_loader_class(airbench)), \
            mock.patch.object(nn.Module, "cuda", keep_on_cpu), mock.patch.object(nn.Module, "half", keep_on_cpu), \
            mock.patch.object(torch.cuda, "Event", WallClockEvent), \
            mock.patch.object(torch.cuda, "synchronize", lambda *args, **kwargs: None):
        yield


def summarise(runs: list[dict]) -> dict:
    keys = runs[0].keys()
    return {f"mean_{k}": round(statistics.fmean(r[k] for r in runs), 4) for k in keys} | {
        k: [round(r[k], 4) for r in runs] for k in keys}


def run(args: argparse.Namespace) -> int:
    on_gpu = args.accelerator == "gpu"
    if on_gpu:
        require_cuda()
    airbench = import_airbench() if args.compare else None
    extra = args.fit_args.split()
    if args.steps is not None:
        extra += ["--max-epochs", "1", "--limit-train-batches", str(args.steps)]

    def train_ours(seed: int, logdir: Path, *more: str) -> dict:
        return ours(args.data_dir, seed, logdir, [*extra, *more], args.accelerator)

    def train_airbench(folder: Path, seed: int) -> dict:
        with on_cpu(airbench) if not on_gpu else contextlib.nullcontext():
            return airbench94(airbench, folder, seed, steps=args.steps)

    result = {"device": torch.cuda.get_device_name() if on_gpu else f"cpu ({torch.get_num_threads()} threads)",
              "torch": torch.__version__, "seeds": args.seeds, "steps": args.steps, "fit_args": args.fit_args}
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        train_ours(0, tmp / "warmup", "--max-epochs", "1")
        if airbench:
            prepare_airbench_data(args.data_dir, tmp / "airbench" / "cifar10")
            train_airbench(tmp / "airbench", 0)  # warm-up
        runs = {"ours": [], "airbench94": []}
        for seed in range(args.seeds):  # alternating, so that a slow spell of the machine hits both sides
            runs["ours"].append(train_ours(seed, tmp / "ours"))
            if airbench:
                runs["airbench94"].append(train_airbench(tmp / "airbench", seed))
    result["ours"] = summarise(runs["ours"])
    if airbench:
        result["airbench94"] = summarise(runs["airbench94"])
        result["time_ratio"] = round(result["ours"]["mean_train_s"] / result["airbench94"]["mean_train_s"], 3)
    print(json.dumps(result))
    return 0
