"""Time a Lightning fit epoch against a plain PyTorch loop: same model, data pipeline and batch size.

The Lightning side is built by `assembly.build_run`, exactly as `python -m cifar10.fit` builds it (its
callbacks, loggers (TensorBoard by default), progress bar, checkpoints, per-batch seeding, throughput, the
DataModule's augmentation hooks), for one epoch of --batches batches, with validation off (the plain
loop does not validate either). The plain side trains a freshly built copy of the same model (same
seed, optimizer and schedule) on the same DataModule batches, augmented and normalised by the same
code, with loss and accuracy accumulated on the device. The sides alternate --repeats times, taking
turns at going first (whichever runs first pays for cold caches and allocator growth); the best of each
is reported: the whole trainer.fit call (set-up included) against the whole plain loop, and the
steady per-step time of each (from the first batch to the last). So are the medians of each round's own
whole-run ratio and per-step difference: the two runs of a round sit side by side in time, so a slow
minute of a shared machine weighs on both, where the best of each side may come from different minutes
(many short rounds, e.g. `--batches 60 --repeats 20`, pin the per-step difference down best).

`--overhead` swaps the network for one linear layer on batches of 4 images, so a step's math costs
next to nothing and the per-step difference is the cost of Lightning and our callbacks themselves.
"""

import argparse
import cProfile
import json
import os
import platform
import pstats
import statistics
import tempfile
import time
from itertools import islice
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from cifar10 import assembly
from cifar10.data import CIFAR10DataModule
from cifar10.data.augment import augment
from cifar10.models import model_names
from cifar10.models.base import ClassifierModule
from cifar10.optimizers import build_optimizer
from cifar10.recipes import RECIPES
from cifar10.fit_settings import resolved
from cifar10.settings import Settings, check_accelerator

OVERHEAD_BATCH, OVERHEAD_BATCHES = 4, 2000


class OneLinearLayer(ClassifierModule):
    """A network whose math is negligible: one linear layer on the flattened image."""

    model_name = "one-linear-layer"

    def build_net(self) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=model_names(), default="lenet",
                        help="whose recipe (and, without --overhead, network) is timed")
    parser.add_argument("--recipe", choices=RECIPES, default="default",
                        help="batch size, optimizer, schedule and augmentation come from it")
    parser.add_argument("--overhead", action="store_true",
                        help=f"one linear layer on batches of {OVERHEAD_BATCH} ({OVERHEAD_BATCHES} of them unless "
                             "--batches): the per-step cost of the loop itself")
    parser.add_argument("--data-dir", default="data", help="folder holding (or to receive) cifar-10-batches-py")
    parser.add_argument("--batch-size", type=int, help="default: the recipe's")
    parser.add_argument("--batches", type=int, help="batches per epoch (default: the whole epoch)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="rounds (one run of each side, taking turns at going first); the best of each side "
                             "and the median of the rounds' own differences are reported")
    parser.add_argument("--accelerator", choices=("cpu", "gpu"), default="gpu" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=("auto", "32", "bf16-mixed"), default="auto",
                        help="auto: as fit chooses (bf16-mixed on a GPU that has bf16, else 32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true",
                        help="instead of timing, run the Lightning side once under cProfile and print the "
                             "per-step milliseconds of the callback, hook and logging functions (inflated by the "
                             "profiler; compare parts, not totals)")


def settings_for(args: argparse.Namespace) -> Settings:
    given = {"model": args.model, "recipe": args.recipe, "data_dir": args.data_dir, "seed": args.seed,
             "accelerator": args.accelerator, "precision": args.precision, "val_size": 0}  # no validation here
    if args.batch_size or args.overhead:
        given["batch_size"] = args.batch_size or OVERHEAD_BATCH
    return resolved(given)


def fresh_model(s: Settings, dm: CIFAR10DataModule, overhead: bool) -> ClassifierModule:
    torch.manual_seed(s.run.seed)
    model = assembly.make_model(s, dm)
    if overhead:
        model = OneLinearLayer(model.settings, mean=model.hparams.mean, std=model.hparams.std,
                               class_names=model.hparams.class_names)
    return model


class StepClock(L.Callback):
    """Seconds from the start of the first training batch to the end of the last one."""

    def __init__(self) -> None:
        self.started = self.ended = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx + 1 == trainer.num_training_batches and pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)  # the clock stops when the work is done, as the plain side's
        self.ended = time.perf_counter()


def time_lightning(s: Settings, batches: int, logdir: Path, overhead: bool) -> tuple[float, float, float, float]:
    """(seconds of trainer.fit, seconds from the first batch to the last, train loss, train accuracy)."""
    clock = StepClock()
    run_dir = Path(tempfile.mkdtemp(dir=logdir)) / s.run.model / "version_0"  # a fresh run folder each time
    trainer, dm, _, _ = assembly.build_run(s, assembly.make_logger(s, None, run_dir), run_dir, [clock], max_epochs=1,
                                      limit_train_batches=batches, limit_val_batches=0, num_sanity_val_steps=0)
    model = fresh_model(s, dm, overhead)
    started = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    seconds = time.perf_counter() - started
    metrics = trainer.callback_metrics
    return seconds, clock.ended - clock.started, float(metrics["train/loss_epoch"]), float(metrics["train/acc"])


def time_plain(s: Settings, dm: CIFAR10DataModule, batches: int, device: torch.device,
               overhead: bool) -> tuple[float, float, float, float]:
    """The same epoch as a hand-written loop: (seconds in all, seconds from the first batch to the last, loss, acc)."""
    started = time.perf_counter()
    model = fresh_model(s, dm, overhead).to(device).train()
    built = build_optimizer(model.settings, model.net, batches)
    optimizer = built["optimizer"] if isinstance(built, dict) else built
    scheduler = built["lr_scheduler"]["scheduler"] if isinstance(built, dict) else None
    loader = dm.train_dataloader()
    loader.batch_sampler.sampler.set_epoch(0)
    generator = torch.Generator(device).manual_seed(s.run.seed)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen, first = 0, None
    for images, labels, _ in islice(loader, batches):  # training batches carry their number
        first = first or time.perf_counter()
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        x = augment(images, dm.augment, generator)  # uint8: the model normalises its input
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=s.trainer.precision == "bf16-mixed"):
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
    ended = time.perf_counter()
    return ended - started, ended - first, loss, acc


PROFILED = ("cifar10/", "lightning/pytorch/callbacks/", "logger_connector", "lightning/pytorch/core/module.py",
            "torchmetrics/metric.py", "torch/nn/modules/module.py")


def profile_lightning(s: Settings, batches: int, overhead: bool) -> None:
    """cProfile of one Lightning-side run: the functions of our code, Lightning's callbacks, hooks and logging,
    with their cumulative milliseconds a step, largest first."""
    with tempfile.TemporaryDirectory() as logdir:
        time_lightning(s, min(batches, 20), Path(logdir), overhead)  # warm-up
        profile = cProfile.Profile()
        profile.enable()
        time_lightning(s, batches, Path(logdir), overhead)
        profile.disable()
    rows = [(cumulative / batches * 1e3, calls, f"{file.split('site-packages/')[-1]}:{line}({name})")
            for (file, line, name), (_, calls, _, cumulative, _) in pstats.Stats(profile).stats.items()
            if calls >= batches and any(part in file for part in PROFILED)]
    print(f"ms a step under cProfile (cumulative), {batches} steps:")
    for ms, calls, where in sorted(rows, reverse=True)[:40]:
        print(f"{ms:9.4f}  {calls:8d}  {where}")


def run(args: argparse.Namespace) -> int:
    s = settings_for(args)
    device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")
    check_accelerator(args.accelerator)
    dm = assembly.make_datamodule(s)
    dm.prepare_data()
    dm.setup("fit")
    dm.move_to(device)
    epoch = len(dm.train_dataloader())
    batches = min(args.batches or (OVERHEAD_BATCHES if args.overhead else epoch), epoch)
    if args.profile:
        profile_lightning(s, batches, args.overhead)
        return 0
    def ms_a_step(steps_s: float) -> float:  # steps_s spans the first batch to the last
        return 1000 * steps_s / max(1, batches - 1)

    best = {"lightning": (float("inf"),) * 2, "plain": (float("inf"),) * 2}
    finals, round_overheads, round_step_ms = {}, [], []
    with tempfile.TemporaryDirectory() as logdir:
        sides = {"lightning": lambda: time_lightning(s, batches, Path(logdir), args.overhead),
                 "plain": lambda: time_plain(s, dm, batches, device, args.overhead)}
        for repeat in range(args.repeats):
            order = list(sides) if repeat % 2 == 0 else list(sides)[::-1]
            timed = {side: sides[side]() for side in order}
            for side, (seconds, steps_s, *loss_acc) in timed.items():
                best[side] = min(best[side][0], seconds), min(best[side][1], steps_s)
                finals[side] = loss_acc
            round_overheads.append(timed["lightning"][0] / timed["plain"][0] - 1)
            round_step_ms.append(ms_a_step(timed["lightning"][1] - timed["plain"][1]))
            print(f"run {repeat + 1}: lightning {timed['lightning'][0]:.2f} s, plain {timed['plain'][0]:.2f} s",
                  flush=True)
    (lightning_s, _), (plain_s, _) = best["lightning"], best["plain"]
    per_step_ms = {side: ms_a_step(steps_s) for side, (_, steps_s) in best.items()}
    overhead_median, step_ms_median = statistics.median(round_overheads), statistics.median(round_step_ms)
    images = batches * s.data.batch_size
    network = "one linear layer" if args.overhead else args.model
    print(f"{network} ({args.model}'s {args.recipe} recipe), {batches} batches of {s.data.batch_size} on {device}, "
          f"{s.trainer.precision} precision, best of {args.repeats}: {per_step_ms['lightning']:.3f} ms a step with "
          f"Lightning, {per_step_ms['plain']:.3f} ms plain ({step_ms_median:+.3f} ms, median of the "
          f"rounds' own differences); the whole run {lightning_s / plain_s - 1:+.1%} (best against best), "
          f"{overhead_median:+.1%} (median of the rounds' own ratios)")
    print(json.dumps({
        "model": args.model, "network": network, "recipe": args.recipe, "batch_size": s.data.batch_size,
        "batches": batches, "augment": s.data.augment, "device": str(device), "precision": s.trainer.precision,
        "repeats": args.repeats, "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "threads": torch.get_num_threads(), "torch": torch.__version__, "lightning": L.__version__,
        "lightning_s": round(lightning_s, 6), "plain_s": round(plain_s, 6),
        "overhead": round(lightning_s / plain_s - 1, 4),
        "overhead_rounds": [round(o, 4) for o in round_overheads],
        "overhead_median": round(overhead_median, 4),
        "lightning_step_ms": round(per_step_ms["lightning"], 4), "plain_step_ms": round(per_step_ms["plain"], 4),
        "overhead_step_ms": round(per_step_ms["lightning"] - per_step_ms["plain"], 4),
        "overhead_step_ms_median": round(step_ms_median, 4),
        "lightning_images_per_s": round(images / lightning_s), "plain_images_per_s": round(images / plain_s),
        "lightning_train_loss": round(finals["lightning"][0], 4), "plain_train_loss": round(finals["plain"][0], 4),
        "lightning_train_acc": round(finals["lightning"][1], 4), "plain_train_acc": round(finals["plain"][1], 4),
    }))
    return 0
