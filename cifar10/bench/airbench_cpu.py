"""Train airbench94 itself on the CPU in 32-bit, on the same images: the accuracy reference for speedrun.

airbench (`pip install airbench`, 0.1.8) only runs on CUDA in 16-bit. This runs its own `train94`,
unchanged, with the CUDA calls pointed at the CPU: its net built in float32 (instead of `.half().cuda()`),
its loaders on the CPU in float32, and CUDA events/synchronisation replaced by the wall clock. So a
session without a GPU can put airbench94 beside `python -m cifar10.fit --model speedrun --accelerator cpu`
on one copy of the data, with the same precision. It prints airbench's per-epoch table, then one JSON
line: test accuracy without and with its TTA (level 2, flip-shift), and the wall time of train94
(its per-epoch evaluations included; its table's last column is training alone).
About 100 minutes on 2 CPU cores; on a GPU use `python -m cifar10.bench speedrun --compare airbench`.
"""

import argparse
import contextlib
import json
import os
import tempfile
import time
from importlib import metadata
from pathlib import Path
from unittest import mock

import torch
from torch import nn

from cifar10.bench.speedrun import import_airbench, write_airbench_data
from cifar10.data import CIFAR10DataModule


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default="data", help="folder holding (or to receive) cifar-10-batches-py")
    parser.add_argument("--seed", type=int, default=0, help="torch.manual_seed before airbench's training")
    parser.add_argument("--epochs", type=float, default=None, help="airbench's train_epochs (default its 9.9)")


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
    """airbench's module globals and torch.cuda's timing calls pointed at the CPU, for the duration."""
    keep_on_cpu = lambda module, *args, **kwargs: module  # noqa: E731  (.cuda() and .half() of the net)
    with mock.patch.object(airbench.utils, "CifarLoader", cpu_loader_class(airbench)), \
            mock.patch.object(nn.Module, "cuda", keep_on_cpu), mock.patch.object(nn.Module, "half", keep_on_cpu), \
            mock.patch.object(torch.cuda, "Event", WallClockEvent), \
            mock.patch.object(torch.cuda, "synchronize", lambda *args, **kwargs: None):
        yield


def run(args: argparse.Namespace) -> int:
    airbench = import_airbench()
    from airbench.lib_airbench94 import hyp
    dm = CIFAR10DataModule(data_dir=args.data_dir, val_size=0)
    dm.prepare_data()
    dm.setup("fit")
    epochs = hyp["opt"]["train_epochs"] if args.epochs is None else args.epochs
    with tempfile.TemporaryDirectory() as tmp, on_cpu(airbench):
        write_airbench_data(dm, Path(tmp) / "cifar10")
        cwd = os.getcwd()
        os.chdir(tmp)  # train94 reads its test set from ./cifar10
        try:
            loader = airbench.utils.CifarLoader("cifar10", train=True, batch_size=hyp["opt"]["batch_size"],
                                                aug=hyp["aug"], altflip=True)
            test_loader = airbench.utils.CifarLoader("cifar10", train=False, batch_size=2000)
            torch.manual_seed(args.seed)
            started = time.perf_counter()
            model = airbench.train94(loader, epochs=epochs, verbose=True)
            seconds = time.perf_counter() - started
        finally:
            os.chdir(cwd)
        result = {"airbench": metadata.version("airbench"),
                  "device": "cpu", "precision": "32", "seed": args.seed, "epochs": epochs,
                  "acc": airbench.evaluate(model, test_loader, tta_level=0),
                  "acc_tta": airbench.evaluate(model, test_loader, tta_level=hyp["net"]["tta_level"]),
                  "wall_s": round(seconds, 1), "threads": torch.get_num_threads()}
    print(json.dumps(result))
    return 0
