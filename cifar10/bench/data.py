"""Time our batched data pipeline against torchvision per-sample transforms, side by side.

Both pipelines read the same training images (the uint8 tensors our reader returns), apply the same
augmentation preset, normalise with the training-set mean and std, and deliver float32 batches of the
same size. Ours: DataModule batches (one fancy-index each) augmented whole on the device. Torchvision:
a Dataset applying transforms.v2 to one PIL image at a time, in DataLoader worker processes.
Each side runs --repeats times alternately; the best run of each is reported (the box may be shared).
"""

import argparse
import json
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

from cifar10.data import AUGMENT_PRESETS, CIFAR10DataModule, augment

DEFAULT_WORKERS = 2  # this project's reference box has 2 cores


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=AUGMENT_PRESETS, default="crop-flip", help="augmentation preset")
    parser.add_argument("--data-dir", default="data", help="folder holding (or to receive) cifar-10-batches-py")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=100, help="timed batches per run (after one warm-up)")
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
        "flip-rotate": [flip, v2.RandomRotation(10)],
        "heavy": [flip, v2.RandomRotation(10), v2.RandomAffine(0, shear=10, scale=(0.8, 1.2)),
                  v2.ColorJitter(0.2, 0.2, 0.2)],
    }[preset]


class PILImages(Dataset):
    """The classic per-sample pipeline: one PIL image per item through a transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: v2.Transform) -> None:
        self.images = images.permute(0, 2, 3, 1).numpy()  # HWC view for PIL, no copy
        self.labels, self.transform = labels.tolist(), transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(np.ascontiguousarray(self.images[index]))), self.labels[index]


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
    """What training sees: DataModule batches, augmented and normalised on the device."""
    generator = torch.Generator(device).manual_seed(seed)
    for epoch in range(1_000_000):
        loader = dm.train_dataloader()
        loader.batch_sampler.sampler.set_epoch(epoch)
        for images, labels in loader:
            yield dm.normalize_images(augment(images, preset, generator)), labels


def theirs(dm: CIFAR10DataModule, preset: str, batch_size: int, workers: int, device: torch.device) -> Iterator:
    transform = v2.Compose([*torchvision_transforms(preset), v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize(dm.mean, dm.std)])
    loader = DataLoader(PILImages(dm.train_images.cpu(), dm.train_labels.cpu(), transform), batch_size=batch_size,
                        shuffle=True, num_workers=workers, pin_memory=device.type == "cuda", drop_last=True,
                        persistent_workers=workers > 0)
    while True:
        for images, labels in loader:
            yield images.to(device, non_blocking=True), labels.to(device, non_blocking=True)


def run(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    dm = CIFAR10DataModule(data_dir=args.data_dir, batch_size=args.batch_size, val_size=0, augment=args.preset,
                           normalize="dataset")
    dm.prepare_data()
    dm.setup("fit")
    dm.train_images, dm.train_labels = dm.train_images.to(device), dm.train_labels.to(device)
    our_rates, their_rates = [], []
    for repeat in range(args.repeats):
        our_rates.append(time_batches(ours(dm, args.preset, device, seed=repeat), args.batches, device))
        their_rates.append(time_batches(theirs(dm, args.preset, args.batch_size, args.workers, device),
                                        args.batches, device))
        print(f"run {repeat + 1}: ours {our_rates[-1]:,.0f} images/s, torchvision {their_rates[-1]:,.0f} images/s",
              flush=True)
    best_ours, best_theirs = max(our_rates), max(their_rates)
    print(f"preset {args.preset}, batch {args.batch_size}, {args.batches} batches x {args.repeats} runs on "
          f"{device} ({torch.get_num_threads()} threads); torchvision with {args.workers} workers")
    print(json.dumps({
        "preset": args.preset, "batch_size": args.batch_size, "batches": args.batches, "repeats": args.repeats,
        "device": str(device), "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "torchvision_workers": args.workers, "torch": torch.__version__, "torchvision": torchvision.__version__,
        "ours_images_per_s": round(best_ours, 1), "torchvision_images_per_s": round(best_theirs, 1),
        "speedup": round(best_ours / best_theirs, 2),
    }))
    return 0
