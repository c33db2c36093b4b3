"""airbench94_muon.py itself, run on the CPU in float32 for one run: the peer that `speedrun-muon` races.

The script (Keller Jordan's CIFAR-10 record of 2025, MIT; kept unchanged in ../shared/peers/) runs only on
CUDA: it loads its data to the GPU in float16, builds its net in float16, times with CUDA events, compiles
its Newton-Schulz step and the net, and trains a warm-up and 200 runs. Here it is imported as a module and
its own `main` runs once, with exactly these things pointed elsewhere: its loader reads the images to the
CPU in float32 (instead of float16 on cuda), `nn.Module.half` keeps the net in float32, the Newton-Schulz
step runs uncompiled in float32 (instead of compiled in bfloat16), CUDA events and synchronisation are the
wall clock, and there is no warm-up run. Its training choices (batch 2000, 8 epochs, learning rates,
schedule, whitening, TTA) are untouched. `limit_batches` keeps only that many batches of the training set
(and 2,000 test images), for timing its first steps: each epoch then costs what that many steps of a
full epoch cost, augmentation of the whole (smaller) set included.
"""

import contextlib
import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from unittest import mock

import torch
from torch import nn

from cifar10.bench.wall_clock import WallClockEvent
from cifar10.errors import UserError

PEER_SCRIPT = Path(__file__).resolve().parents[2].parent / "shared" / "peers" / "airbench94_muon" / "airbench94_muon.py"
EPOCHS = 8  # the script's own; its `main` trains ceil(8 x batches an epoch) steps


def import_peer(script: Path) -> ModuleType:
    """The script as a module (its top level only defines things, sets cudnn.benchmark and reads sys.argv[0])."""
    if not Path(script).is_file():
        raise UserError(f"airbench94_muon.py not found at {script}. It is kept in ../shared/peers/airbench94_muon/ "
                        "beside the project's checkout; pass --peer-script PATH to a copy of it.")
    spec = importlib.util.spec_from_file_location("airbench94_muon", script)
    module = importlib.util.module_from_spec(spec)
    argv0 = sys.argv[0] if Path(sys.argv[0]).is_file() else str(script)  # it reads its own source from argv[0]
    with mock.patch.object(sys, "argv", [argv0, *sys.argv[1:]]):
        spec.loader.exec_module(module)
    return module


torch_load = torch.load  # the real one, for use while the script's is patched


def cpu_loader_class(peer: ModuleType, limit_batches: int | None, batch_size: int | None):
    class CpuFloatLoader(peer.CifarLoader):
        """Its loader with the images on the CPU in float32; optionally fewer of them, or smaller batches."""

        def __init__(self, path, train=True, batch_size=500, aug=None) -> None:
            on_cpu_load = lambda f, map_location=None, **kw: torch_load(f, **kw)  # noqa: E731 (it asks for cuda)
            with mock.patch.object(torch, "load", on_cpu_load):
                super().__init__(path, train=train, batch_size=override_batch or batch_size, aug=aug)
            raw = torch_load(os.path.join(path, "train.pt" if train else "test.pt"))["images"]
            keep = None if not limit_batches else limit_batches * self.batch_size if train else 2000
            self.images = (raw[:keep].float() / 255).permute(0, 3, 1, 2).to(memory_format=torch.channels_last)
            self.labels = self.labels[:keep]

    override_batch = batch_size
    return CpuFloatLoader


def float32_newton_schulz(peer: ModuleType):
    compiled = peer.zeropower_via_newtonschulz5
    original = getattr(compiled, "_torchdynamo_orig_callable", compiled)

    def newton_schulz(G, steps=3, eps=1e-7):
        with mock.patch.object(torch.Tensor, "bfloat16", torch.Tensor.float):
            return original(G, steps=steps, eps=eps)
    return newton_schulz


@contextlib.contextmanager
def on_cpu(peer: ModuleType, limit_batches: int | None = None, batch_size: int | None = None) -> Iterator[list]:
    """Within: the script's main runs on the CPU in float32; yields the rows it prints (one dict an epoch)."""
    rows: list[dict] = []
    keep_on_cpu = lambda module, *args, **kwargs: module  # noqa: E731  (.half() of the net)
    record = lambda variables, is_final_entry: rows.append(  # noqa: E731
        {k: variables.get(k) for k in ("epoch", "train_acc", "val_acc", "tta_val_acc", "time_seconds")})
    with mock.patch.object(peer, "CifarLoader", cpu_loader_class(peer, limit_batches, batch_size)), \
            mock.patch.object(peer, "zeropower_via_newtonschulz5", float32_newton_schulz(peer)), \
            mock.patch.object(peer, "print_training_details", record), \
            mock.patch.object(nn.Module, "half", keep_on_cpu), \
            mock.patch.object(torch.cuda, "Event", WallClockEvent), \
            mock.patch.object(torch.cuda, "synchronize", lambda *args, **kwargs: None):
        yield rows


def airbench94_muon(data_folder: Path, seed: int, script: Path = PEER_SCRIPT, limit_batches: int | None = None,
                    batch_size: int | None = None) -> dict:
    """One run of the script's main on data_folder/cifar10/{train,test}.pt: per-epoch rows, final accuracies,
    training seconds (its own timer: whitening and training steps, no evaluation) and the steps taken."""
    peer = import_peer(script)
    torch.manual_seed(seed)
    cwd = os.getcwd()
    os.chdir(data_folder)  # it reads ./cifar10
    try:
        with on_cpu(peer, limit_batches, batch_size) as rows:
            model = peer.CifarNet().to(memory_format=torch.channels_last)
            tta_acc = peer.main(0, model)
    finally:
        os.chdir(cwd)
    epochs = [r for r in rows if r["epoch"] != "eval"]
    batch = batch_size or 2000
    steps_an_epoch = limit_batches or len(torch_load(data_folder / "cifar10" / "train.pt")["labels"]) // batch
    return {"epochs": epochs, "acc": epochs[-1]["val_acc"], "acc_tta": tta_acc,
            "train_s": epochs[-1]["time_seconds"], "steps": EPOCHS * steps_an_epoch}
