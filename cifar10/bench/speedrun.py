"""Time `speedrun` to its test accuracy over several seeds, beside airbench94 on the same device and data.

Ours is built and tested as `python -m cifar10.fit --model speedrun --accelerator gpu --seed S` builds and
tests it (`cifar10.assembly`), in this process; its time is the training time a fit records (`train_time_s`:
training steps only, no validation or test) and its accuracy is the fit's test accuracy, with the recipe's
flip-shift test-time augmentation. airbench94
(`pip install airbench`) trains through its own `train94` on the same images, which this benchmark
writes in the layout airbench's loader reads; its time is the wall time of `train94` (whitening and
training, no evaluation) and its accuracy is reported with its TTA level 2 (the same flip-shift, as it
publishes) and without. One untimed warm-up run of each comes first, then the seeds alternate between
the two. (airbench trains 9.9 epochs of 48 full batches, 476 steps; ours 10 epochs of 49 batches, the
last one partial, 490 steps.)

`--accelerator cpu` runs both in 32-bit on the CPU (airbench94's own code, its CUDA calls pointed at the
CPU, as in `bench airbench-cpu`), where a full run takes over an hour: `--steps N` then times the first N
training steps of each, for their time per step side by side (ours is not tested then: the accuracy after
so few steps means nothing).
Each record holder trains with PyTorch's default algorithms, as its script does: our Trainer turns
deterministic ones on for the whole process, and they are turned off around the peer's training.

`--compare airbench94_muon` races `speedrun-muon` against airbench94_muon.py itself (the 2025 record, kept
in ../shared/peers/), on the CPU in float32 through `cifar10.bench.airbench_muon`; both train 8 epochs of
25 batches (200 steps). With `--steps N` ours trains its first N steps, the peer 8 epochs of ceil(N/8)
batches. The JSON line gives `time_ratio` (ours / theirs, training seconds) and `step_ratio` (the same per
training step).
"""

import argparse
import contextlib
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import lightning as L
import torch
from torch import nn

from cifar10 import assembly
from cifar10.bench.wall_clock import WallClockEvent
from cifar10.data import CIFAR10DataModule
from cifar10.errors import UserError
from cifar10.fit_settings import settings_from
from cifar10.settings import check_accelerator
from cifar10.stopping import StopRequested, preserved_handlers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default="data", help="folder holding (or to receive) cifar-10-batches-py")
    parser.add_argument("--seeds", type=int, default=5, help="runs per side, seeds 0..N-1")
    parser.add_argument("--compare", choices=tuple(PEERS),
                        help="also run a record holder on the same device and data: airbench (airbench94, beside "
                             "speedrun) or airbench94_muon (beside speedrun-muon; CPU only here)")
    parser.add_argument("--peer-script", type=Path, default=None,
                        help="airbench94_muon.py (default: ../shared/peers/airbench94_muon/ beside the checkout)")
    parser.add_argument("--fit-args", default="", help="extra fit flags for our side, e.g. '--compile'")
    parser.add_argument("--accelerator", choices=("gpu", "cpu"), default="gpu",
                        help="gpu (default): ours as fit runs it there, airbench94 in its 16-bit; cpu: both in 32-bit")
    parser.add_argument("--steps", type=int, default=None,
                        help="train only the first N steps of each (default: the whole run); for a CPU timing "
                             "(ours is then not tested)")


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


def ours(data_dir: str, seed: int, logdir: Path, extra: list[str], accelerator: str = "gpu",
         model: str = "speedrun", test: bool = True) -> dict:
    """One fit of ours, built as `python -m cifar10.fit` builds it (cifar10.assembly) and tested as it tests (the
    recipe's TTA): its test accuracy (unless not `test`), training seconds (steps only) and wall seconds."""
    s, _ = settings_from(["--model", model, "--accelerator", accelerator, "--data-dir", data_dir, "--seed", str(seed),
                          "--logdir", str(logdir), *extra])
    check_accelerator(s.trainer.accelerator)
    L.seed_everything(s.run.seed, workers=True)
    run_dir = assembly.run_folder(s, None)
    trainer, dm, net, callbacks = assembly.build_run(s, assembly.make_logger(s, None, run_dir), run_dir)
    try:
        with preserved_handlers():  # the fit's stop callback takes the signals while it trains: give them back
            trainer.fit(net, datamodule=dm)
            if test:
                trainer.test(net, datamodule=dm, ckpt_path=assembly.tested_checkpoint(dm, callbacks.best) or None,
                             verbose=False)
    except StopRequested as stop:
        raise UserError(f"our {model} fit was stopped ({stop}), so the benchmark has no result.") from None
    done = callbacks.throughput
    return ({"acc": float(net.test_results["acc"])} if test else {}) | {
        "train_s": round(done.seconds, 2), "wall_s": round(done.wall_s, 2)}


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
    dm = CIFAR10DataModule.from_keywords(data_dir=data_dir, val_size=0)
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


@contextlib.contextmanager
def default_algorithms() -> Iterator[None]:
    """PyTorch's default (not deterministic) algorithms within: as the record holders' scripts run."""
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(False)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def summarise(runs: list[dict]) -> dict:
    keys = runs[0].keys()
    return {f"mean_{k}": round(statistics.fmean(r[k] for r in runs), 4) for k in keys} | {
        k: [round(r[k], 4) for r in runs] for k in keys}


def train_airbench94(args: argparse.Namespace, folder: Path, seed: int) -> dict:
    airbench = import_airbench()
    with on_cpu(airbench) if args.accelerator == "cpu" else contextlib.nullcontext():
        return airbench94(airbench, folder, seed, steps=args.steps) | {"steps": args.steps or 476}


def train_airbench94_muon(args: argparse.Namespace, folder: Path, seed: int) -> dict:
    """airbench94_muon.py's own main, on the CPU in float32 (cifar10.bench.airbench_muon); with --steps N its 8
    epochs keep ceil(N / 8) batches each, so it takes the first 8 x ceil(N / 8) steps' worth of work."""
    from cifar10.bench.airbench_muon import EPOCHS, PEER_SCRIPT, airbench94_muon
    if args.accelerator != "cpu":
        raise UserError("--compare airbench94_muon runs the script on the CPU here; on a GPU run "
                        "airbench94_muon.py itself beside `python -m cifar10.fit --model speedrun-muon`.")
    limit = math.ceil(args.steps / EPOCHS) if args.steps else None
    done = airbench94_muon(folder, seed, args.peer_script or PEER_SCRIPT, limit_batches=limit)
    return {key: done[key] for key in ("acc", "acc_tta", "train_s", "steps")}


@dataclass(frozen=True)
class Peer:
    """A record holder to race: its name in the JSON line, our model beside it, and one training of it."""

    label: str
    model: str
    train: Callable[[argparse.Namespace, Path, int], dict]  # (args, folder holding cifar10/, seed) -> figures


PEERS = {"airbench": Peer("airbench94", "speedrun", train_airbench94),
         "airbench94_muon": Peer("airbench94_muon", "speedrun-muon", train_airbench94_muon)}
OURS_WHOLE_RUN_STEPS = {"speedrun": 490, "speedrun-muon": 200}  # 10 epochs of 49 batches; 8 of 25


def run(args: argparse.Namespace) -> int:
    on_gpu = args.accelerator == "gpu"
    if on_gpu:
        require_cuda()
    peer = PEERS[args.compare] if args.compare else None
    if peer is PEERS.get("airbench"):
        import_airbench()  # a missing package is an error before anything trains
    model = peer.model if peer else "speedrun"
    extra = args.fit_args.split()
    if args.steps is not None:
        extra += ["--max-epochs", "1", "--limit-train-batches", str(args.steps)]

    def train_ours(seed: int, logdir: Path, *more: str) -> dict:  # after a few steps, accuracy means nothing: no test
        return ours(args.data_dir, seed, logdir, [*extra, *more], args.accelerator, model, test=args.steps is None) | {
            "steps": args.steps or OURS_WHOLE_RUN_STEPS[model]}

    result = {"device": torch.cuda.get_device_name() if on_gpu else f"cpu ({torch.get_num_threads()} threads)",
              "torch": torch.__version__, "model": model, "seeds": args.seeds, "steps": args.steps,
              "fit_args": args.fit_args}
    runs = {"ours": []} | ({peer.label: []} if peer else {})
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        train_ours(0, tmp / "warmup", "--max-epochs", "1")
        if peer:
            prepare_airbench_data(args.data_dir, tmp / "peer" / "cifar10")
            with default_algorithms():
                peer.train(args, tmp / "peer", 0)  # warm-up
        for seed in range(args.seeds):  # alternating, so that a slow spell of the machine hits both sides
            runs["ours"].append(train_ours(seed, tmp / "ours"))
            if peer:
                with default_algorithms():
                    runs[peer.label].append(peer.train(args, tmp / "peer", seed))
    result |= {side: summarise(side_runs) for side, side_runs in runs.items()}
    if peer:
        theirs = result[peer.label]
        result["time_ratio"] = round(result["ours"]["mean_train_s"] / theirs["mean_train_s"], 3)
        result["step_ratio"] = round((result["ours"]["mean_train_s"] / result["ours"]["mean_steps"])
                                     / (theirs["mean_train_s"] / theirs["mean_steps"]), 3)
    print(json.dumps(result))
    return 0
