"""Time training steps of models in the default (NCHW) and the channels-last memory layout, side by side.

Each step is a forward and backward pass and an SGD step on one batch of random images (the layout's
speed does not depend on the pixels), in 32-bit or under bf16 autocast (`--precision`). For each
model the two layouts alternate --repeats times and the best of each is reported (seconds per step);
one JSON line per model, with `speedup` = contiguous_s / channels_last_s. `python -m cifar10.fit`
uses channels-last by default because of what this measures.
"""

import argparse
import json
import time

import torch
import torch.nn.functional as F

from cifar10.models import create_model, model_names
from cifar10.fit_settings import recipe_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", choices=model_names(), default=["lenet", "resnet18", "speedrun"])
    parser.add_argument("--batch-size", type=int, help="default: each model's default recipe's")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per layout; the best is reported")
    parser.add_argument("--accelerator", choices=("cpu", "gpu"), default="gpu" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=("32", "bf16-mixed"), default="32",
                        help="bf16-mixed: forward and loss under bf16 autocast, as fit does on a GPU")


class Trainee:
    """A fresh model in one layout with its optimizer; `seconds(n)` times n training steps on a batch."""

    def __init__(self, model_name: str, channels_last: bool, device: torch.device, bf16: bool) -> None:
        self.bf16 = bf16
        torch.manual_seed(0)
        self.model = create_model(model_name, channels_last=channels_last).to(device).train()
        self.optimizer = torch.optim.SGD([p for p in self.model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)

    def seconds(self, images: torch.Tensor, labels: torch.Tensor, n: int) -> float:
        synchronize(images.device)
        started = time.perf_counter()
        for _ in range(n):
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                loss = F.cross_entropy(self.model(images), labels)
            loss.backward()
            self.optimizer.step()
        synchronize(images.device)
        return (time.perf_counter() - started) / n


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compare(model_name: str, args: argparse.Namespace) -> dict:
    device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")
    batch_size = args.batch_size or recipe_settings(model_name)["batch_size"]
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, 3, 32, 32, generator=generator).to(device)
    labels = torch.randint(0, 10, (batch_size,), generator=generator).to(device)
    bf16 = args.precision == "bf16-mixed"
    trainees = {layout: Trainee(model_name, layout, device, bf16) for layout in (False, True)}
    for trainee in trainees.values():
        trainee.seconds(images, labels, 1)  # warm-up: allocations, kernel selection
    times = {layout: [] for layout in trainees}
    for _ in range(args.repeats):  # the layouts alternate, so a busy spell of the machine hits both
        for layout, trainee in trainees.items():
            times[layout].append(trainee.seconds(images, labels, args.steps))
    contiguous, channels_last = min(times[False]), min(times[True])
    return {"model": model_name, "batch_size": batch_size, "device": str(device), "precision": args.precision,
            "threads": torch.get_num_threads(),
            "contiguous_s": round(contiguous, 6), "channels_last_s": round(channels_last, 6),
            "speedup": round(contiguous / channels_last, 2)}


def run(args: argparse.Namespace) -> int:
    for model_name in args.models:
        print(json.dumps(compare(model_name, args)), flush=True)
    return 0
