"""Time our batched data pipeline against torchvision per-sample transforms, side by side.

Both pipelines read the same training images (the uint8 tensors our reader returns), apply the same
augmentation preset, normalise with the training-set mean and std, and deliver float32 batches of the
same size. Ours: DataModule batches (one index_select each) augmented whole on the device. Torchvision:
a Dataset applying transforms.v2 to one image at a time, in DataLoader worker processes, once on PIL
images and once on uint8 tensors (which is faster depends on the preset; the faster one is compared).
Each pipeline runs --repeats times, interleaved; the best run of each is reported (the box may be shared).
"""

import argparse
import json
import os
import platform
import time
from collections.abc import Iterator
from itertools import islice

import numpy as np
import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from cifar10.data import CIFAR10DataModule
from cifar10.data.augment import AUGMENT_PRESETS, augment
from cifar10.data.normalization import Normalize

DEFAULT_WORKERS = 2  # this project's reference box has 2 cores


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=AUGMENT_PRESETS, default="crop-flip", help="augmentation preset")
    parser.add_argument("--data-dir", default="data", help="folder holding (or to receive) cifar-10-batches-py")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=50, help="timed batches per run (after one warm-up)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per pipeline; the best is reported")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="torchvision DataLoader workers")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch intra-op threads for our pipeline (default: torch's own choice)")


def torchvision_transforms(preset: str) -> list[v2.Transform]:
    """The per-sample equivalent of each preset (torchvision defaults: nearest resampling, zero fill)."""
    flip = v2.RandomHorizontalFlip()
    return {
        "none": [],
        "flip": [flip],
        "crop-flip": [v2.RandomCrop(32, padding=4), flip],
        "shift-altflip": [v2.RandomCrop(32, padding=2, padding_mode="reflect"), flip],  # per-sample: random flips
        "flip-rotate": [flip, v2.RandomRotation(10)],
        "heavy": [flip, v2.RandomRotation(10), v2.RandomAffine(0, shear=10, scale=(0.8, 1.2)),
                  v2.ColorJitter(0.2, 0.2, 0.2)],
    }[preset]


class PerSample(Dataset):
    """The classic pipeline: one image per item (a PIL image or a uint8 tensor) through a transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: v2.Transform, pil: bool) -> None:
        self.images = images.permute(0, 2, 3, 1).numpy() if pil else images  # HWC view for PIL, no copy
        self.labels, self.transform, self.pil = labels.tolist(), transform, pil

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = Image.fromarray(np.ascontiguousarray(self.images[index])) if self.pil else self.images[index]
        return self.transform(image), self.labels[index]


def time_batches(batches: Iterator, count: int, device: torch.device) -> float:
    """Images per second over `count` batches after one warm-up batch."""
    next(batches)
    images = 0
    started = time.perf_counter()
    for x, _ in islice(batches, count):
        images += len(x)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return images / (time.perf_counter() - started)


def ours(dm: CIFAR10DataModule, preset: str, device: torch.device, seed: int) -> Iterator:
    """What training sees: DataModule batches, augmented on the device, then normalised as the model's first
    step does (torchvision's pipeline below normalises too)."""
    generator = torch.Generator(device).manual_seed(seed)
    to_input = Normalize(dm.mean, dm.std).to(device)  # once, as the model holds it
    for epoch in range(1_000_000):
        loader = dm.train_dataloader()
        loader.batch_sampler.sampler.set_epoch(epoch)
        for images, labels, _ in loader:  # training batches carry their number
            yield to_input(augment(images, preset, generator)), labels


def theirs(dm: CIFAR10DataModule, preset: str, pil: bool, batch_size: int, workers: int,
           device: torch.device) -> Iterator:
    to_tensor = [v2.PILToTensor()] if pil else []
    transform = v2.Compose([*torchvision_transforms(preset), *to_tensor, v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize(dm.mean, dm.std)])
    dataset = PerSample(dm.train_images.cpu(), dm.train_labels.cpu(), transform, pil)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                        pin_memory=device.type == "cuda", drop_last=True, persistent_workers=workers > 0)
    while True:
        for images, labels in loader:
            yield images.to(device, non_blocking=True), labels.to(device, non_blocking=True)


def run(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    dm = CIFAR10DataModule.from_keywords(data_dir=args.data_dir, batch_size=args.batch_size, val_size=0, augment=args.preset,
                           normalize="dataset")
    dm.prepare_data()
    dm.setup("fit")
    dm.train_images, dm.train_labels = dm.train_images.to(device), dm.train_labels.to(device)
    pipelines = {
        "ours": lambda seed: ours(dm, args.preset, device, seed),
        "torchvision_pil": lambda seed: theirs(dm, args.preset, True, args.batch_size, args.workers, device),
        "torchvision_tensor": lambda seed: theirs(dm, args.preset, False, args.batch_size, args.workers, device),
    }
    best = dict.fromkeys(pipelines, 0.0)
    for repeat in range(args.repeats):
        rates = {name: time_batches(make(repeat), args.batches, device) for name, make in pipelines.items()}
        best = {name: max(best[name], rate) for name, rate in rates.items()}
        print(f"run {repeat + 1}: " + ", ".join(f"{name} {rate:,.0f}" for name, rate in rates.items()) + " images/s",
              flush=True)
    baseline = max(("torchvision_pil", "torchvision_tensor"), key=best.get)
    print(f"preset {args.preset}, batch {args.batch_size}, {args.batches} batches x {args.repeats} runs; ours on "
          f"{device} with {args.threads} threads, torchvision with {args.workers} DataLoader workers")
    print(json.dumps({
        "preset": args.preset, "batch_size": args.batch_size, "batches": args.batches, "repeats": args.repeats,
        "device": str(device), "threads": args.threads, "torchvision_workers": args.workers,
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus", "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "ours_images_per_s": round(best["ours"]), "torchvision_images_per_s": round(best[baseline]),
        "torchvision_input": baseline.removeprefix("torchvision_"),
        "torchvision_pil_images_per_s": round(best["torchvision_pil"]),
        "torchvision_tensor_images_per_s": round(best["torchvision_tensor"]),
        "speedup": round(best["ours"] / best[baseline], 1),
    }))
    return 0
