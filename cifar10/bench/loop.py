"""Time a Lightning fit epoch against a plain PyTorch loop: same model, data pipeline and batch size.

Both sides train a freshly built model (same seed, the recipe's optimizer and schedule) on the same
DataModule batches, augmented and normalised by the same code on the same device, with loss and
accuracy accumulated on the device. The Lightning side runs as the fit command does (TensorBoard
logging, progress bar, LR monitor, torchmetrics) without validation and checkpoints, which the plain
loop does not do either. Timed: the whole trainer.fit call, set-up included, against the whole plain
loop. The sides alternate --repeats times and the best run of each is reported.
"""

import argparse
import json
import os
import platform
import tempfile
import time
from itertools import islice

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import LearningRateMonitor, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger

from cifar10 import fit
from cifar10.data import CIFAR10DataModule, augment
from cifar10.models import model_names
from cifar10.models.base import ClassifierModule, build_optimizer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=model_names(), default="lenet")
    parser.add_argument("--recipe", choices=("tutorial", "default"), default="default",
                        help="batch size, optimizer, schedule and augmentation come from it")
    parser.add_argument("--data-dir", default="data", help="folder holding (or to receive) cifar-10-batches-py")
    parser.add_argument("--batch-size", type=int, help="default: the recipe's")
    parser.add_argument("--batches", type=int, help="batches per epoch (default: the whole epoch)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per side; the best is reported")
    parser.add_argument("--accelerator", choices=("cpu", "gpu"), default="gpu" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=("auto", "32", "bf16-mixed"), default="auto",
                        help="auto: as fit chooses (bf16-mixed on a GPU that has bf16, else 32)")
    parser.add_argument("--seed", type=int, default=0)


def settings_for(args: argparse.Namespace) -> dict:
    given = {"model": args.model, "recipe": args.recipe, "data_dir": args.data_dir, "seed": args.seed,
             "accelerator": args.accelerator, "precision": args.precision, "val_size": 0}  # no validation here
    if args.batch_size:
        given["batch_size"] = args.batch_size
    return fit.resolve_auto(fit.resolve_settings(given)[0])


def fresh_model(s: dict, dm: CIFAR10DataModule) -> ClassifierModule:
    torch.manual_seed(s["seed"])
    return fit.make_model(s, dm)


def time_lightning(s: dict, dm: CIFAR10DataModule, batches: int, logdir: str) -> tuple[float, float, float]:
    """Seconds for trainer.fit over one epoch of `batches` batches, and the epoch's train loss and accuracy."""
    model = fresh_model(s, dm)
    every = fit.log_interval(dm, s["batch_size"])
    trainer = L.Trainer(accelerator=s["accelerator"], devices=1, precision=s["precision"], max_epochs=1,
                        limit_train_batches=batches, limit_val_batches=0, num_sanity_val_steps=0,
                        enable_checkpointing=False, logger=TensorBoardLogger(logdir, name="loop"),
                        callbacks=[LearningRateMonitor(logging_interval="step"),
                                   TQDMProgressBar(refresh_rate=fit.PROGRESS_EVERY)],
                        log_every_n_steps=every)
    started = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    seconds = time.perf_counter() - started
    metrics = trainer.callback_metrics
    return seconds, float(metrics["train/loss_epoch"]), float(metrics["train/acc"])


def time_plain(s: dict, dm: CIFAR10DataModule, batches: int, device: torch.device) -> tuple[float, float, float]:
    """Seconds for the same epoch as a hand-written loop, and its train loss and accuracy."""
    started = time.perf_counter()
    model = fresh_model(s, dm).to(device).train()
    built = build_optimizer(model.hparams, model.net, batches)
    optimizer = built["optimizer"] if isinstance(built, dict) else built
    scheduler = built["lr_scheduler"]["scheduler"] if isinstance(built, dict) else None
    loader = dm.train_dataloader()
    loader.batch_sampler.sampler.set_epoch(0)
    generator = torch.Generator(device).manual_seed(s["seed"])
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    for images, labels in islice(loader, batches):
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        x = dm.normalize_images(augment(images, dm.augment, generator))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=s["precision"] == "bf16-mixed"):
            logits = model(x)
            loss = F.cross_entropy(logits, labels, label_smoothing=model.hparams.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        loss_sum += loss.detach() * len(labels)
        correct += (logits.argmax(1) == labels).sum()
        seen += len(labels)
    loss, acc = float(loss_sum) / seen, float(correct) / seen  # the one host synchronisation, at the end
    return time.perf_counter() - started, loss, acc


def run(args: argparse.Namespace) -> int:
    s = settings_for(args)
    device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")
    fit.check_accelerator(args.accelerator)
    dm = fit.make_datamodule(s)
    dm.prepare_data()
    dm.setup("fit")
    dm.move_to(device)
    batches = min(args.batches or len(dm.train_dataloader()), len(dm.train_dataloader()))
    best = {"lightning": float("inf"), "plain": float("inf")}
    finals = {}
    with tempfile.TemporaryDirectory() as logdir:
        for repeat in range(args.repeats):
            timed = {"lightning": time_lightning(s, dm, batches, logdir), "plain": time_plain(s, dm, batches, device)}
            for side, (seconds, *loss_acc) in timed.items():
                best[side], finals[side] = min(best[side], seconds), loss_acc
            print(f"run {repeat + 1}: lightning {timed['lightning'][0]:.2f} s, plain {timed['plain'][0]:.2f} s",
                  flush=True)
    images = batches * s["batch_size"]
    print(f"{args.model} ({args.recipe} recipe), {batches} batches of {s['batch_size']} on {device}, "
          f"{s['precision']} precision, best of {args.repeats}")
    print(json.dumps({
        "model": args.model, "recipe": args.recipe, "batch_size": s["batch_size"], "batches": batches,
        "augment": s["augment"], "device": str(device), "precision": s["precision"], "repeats": args.repeats,
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus", "threads": torch.get_num_threads(),
        "torch": torch.__version__, "lightning": L.__version__,
        "lightning_s": round(best["lightning"], 6), "plain_s": round(best["plain"], 6),
        "overhead": round(best["lightning"] / best["plain"] - 1, 4),
        "lightning_images_per_s": round(images / best["lightning"]),
        "plain_images_per_s": round(images / best["plain"]),
        "lightning_train_loss": round(finals["lightning"][0], 4), "plain_train_loss": round(finals["plain"][0], 4),
        "lightning_train_acc": round(finals["lightning"][1], 4), "plain_train_acc": round(finals["plain"][1], 4),
    }))
    return 0
