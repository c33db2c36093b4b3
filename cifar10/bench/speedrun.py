"""Time `speedrun` to its test accuracy on one GPU, over several seeds, beside airbench94 on the same data.

Ours runs as `python -m cifar10.fit --model speedrun --accelerator gpu --seed S` does; its time is the
training time the fit records (`train_time_s`: training steps only, no validation or test) and its
accuracy is the fit's test accuracy, with the recipe's flip-shift test-time augmentation. airbench94
(`pip install airbench`) trains through its own `train94` on the same images, which this benchmark
writes in the layout airbench's loader reads; its time is the wall time of `train94` (whitening and
training, no evaluation) and its accuracy is reported with its TTA level 2 (the same flip-shift, as it
publishes) and without. One untimed warm-up run of each comes first. (airbench trains 9.9 epochs of
48 full batches, 476 steps; ours 10 epochs of 49 batches, the last one partial, 490 steps.)
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from cifar10 import fit
from cifar10.data import CIFAR10DataModule
from cifar10.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default="data", help="folder holding (or to receive) cifar-10-batches-py")
    parser.add_argument("--seeds", type=int, default=5, help="runs per side, seeds 0..N-1")
    parser.add_argument("--compare", choices=("airbench",), help="also run airbench94 on the same GPU and data")
    parser.add_argument("--fit-args", default="", help="extra fit flags for our side, e.g. '--compile'")


def require_cuda() -> None:
    if not torch.cuda.is_available():
        raise UserError("the speedrun benchmark times training on a GPU, and PyTorch sees no CUDA GPU here. "
                        "Run it on a machine with an NVIDIA GPU. On a CPU, `python -m cifar10.bench airbench-cpu` "
                        "trains airbench94 for its accuracy on your data (about 100 minutes), and "
                        "`python -m cifar10.bench loop` compares Lightning's loop with a plain one.")


def import_airbench():
    try:
        import airbench
    except ImportError:
        raise UserError("airbench is not installed: `pip install airbench==0.1.8` (`make install` does; or install its "
                        "wheel on a machine without internet), then run again.") from None
    return airbench


def ours(data_dir: str, seed: int, logdir: Path, extra: list[str]) -> dict:
    args = ["--model", "speedrun", "--accelerator", "gpu", "--data-dir", data_dir, "--seed", str(seed),
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


def airbench94(airbench, folder: Path, seed: int, epochs: float | None = None, verbose: bool = False) -> dict:
    """One airbench94 training from the data in folder/cifar10 (airbench reads its test set from ./cifar10).

    The loaders come from airbench.utils, where bench airbench-cpu swaps in its CPU loader.
    epochs: airbench's train_epochs (None: its 9.9); verbose: print airbench's per-epoch table.
    """
    from airbench.lib_airbench94 import hyp
    loader = airbench.utils.CifarLoader
    train_loader = loader(str(folder / "cifar10"), train=True, batch_size=hyp["opt"]["batch_size"],
                          aug=hyp["aug"], altflip=True)
    test_loader = loader(str(folder / "cifar10"), train=False, batch_size=2000)
    torch.manual_seed(seed)
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        torch.cuda.synchronize()
        started = time.perf_counter()
        model = airbench.train94(train_loader, epochs=hyp["opt"]["train_epochs"] if epochs is None else epochs,
                                 verbose=verbose)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - started
    finally:
        os.chdir(cwd)
    return {"acc": airbench.evaluate(model, test_loader, tta_level=0),
            "acc_tta": airbench.evaluate(model, test_loader, tta_level=hyp["net"]["tta_level"]), "train_s": seconds}


def summarise(runs: list[dict]) -> dict:
    keys = runs[0].keys()
    return {f"mean_{k}": round(statistics.fmean(r[k] for r in runs), 4) for k in keys} | {
        k: [round(r[k], 4) for r in runs] for k in keys}


def run(args: argparse.Namespace) -> int:
    require_cuda()
    airbench = import_airbench() if args.compare else None
    extra = args.fit_args.split()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ours(args.data_dir, 0, tmp / "warmup", [*extra, "--max-epochs", "1"])
        result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "seeds": args.seeds,
                  "fit_args": args.fit_args, "ours": summarise([ours(args.data_dir, s, tmp / "ours", extra)
                                                                for s in range(args.seeds)])}
        if airbench:
            prepare_airbench_data(args.data_dir, tmp / "airbench" / "cifar10")
            airbench94(airbench, tmp / "airbench", seed=0)  # warm-up
            result["airbench94"] = summarise([airbench94(airbench, tmp / "airbench", s) for s in range(args.seeds)])
            result["time_ratio"] = round(result["ours"]["mean_train_s"] / result["airbench94"]["mean_train_s"], 3)
    print(json.dumps(result))
    return 0
