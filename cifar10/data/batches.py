"""Our own reader of the pickled python batches, into uint8 tensors (N, 3, 32, 32) and int64 labels.

It reads the official release and re-packed copies alike (torchvision's CIFAR10 class checks the
official per-file md5s and so refuses the latter), and checks what it reads.
"""

import os
import pickle
from pathlib import Path

import numpy as np
import torch

from cifar10.errors import UserError

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
OFFICIAL_COUNTS = {"train": 50_000, "test": 10_000}
NUM_CLASSES = 10
PIXELS = 3 * 32 * 32


class BatchUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a batch file cannot run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return super().find_class(module, name)


def corrupt(path: Path, why: str) -> UserError:
    return UserError(f"The CIFAR-10 batch file {path} is truncated or corrupt ({why}). Delete the folder "
                     f"{path.parent} (and the archive beside it if any) so it is extracted or downloaded again.")


def load_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            content = BatchUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise UserError(f"The CIFAR-10 batch file {path} is missing. Delete the folder {path.parent} so it is "
                        "extracted again, or place a complete cifar-10-batches-py folder there.") from None
    except Exception as err:  # pickle raises many types on bad bytes: all mean the same here
        raise corrupt(path, f"{type(err).__name__}: {err}") from None
    if not isinstance(content, dict):
        raise corrupt(path, f"holds a {type(content).__name__}, not a dict")
    return content


def read_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch file -> (images uint8 (n, 3, 32, 32), labels int64 (n,))."""
    content = load_pickle(path)
    data, labels = content.get("data"), content.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
        raise corrupt(path, f"'data' is not a uint8 array of shape (n, {PIXELS})")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise corrupt(path, "'labels' is not a list of integers") from None
    if labels.shape != (len(data),):
        raise corrupt(path, f"{len(data)} images but {labels.size} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise corrupt(path, f"labels outside 0..{NUM_CLASSES - 1}")
    return torch.from_numpy(data).view(-1, 3, 32, 32), torch.from_numpy(labels)


def read_split(folder: str | Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The 'train' or 'test' split as one uint8 tensor (N, 3, 32, 32) and int64 labels (N,)."""
    folder = Path(folder)
    parts = [read_batch(folder / name) for name in (TRAIN_FILES if split == "train" else TEST_FILES)]
    images = torch.cat([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = torch.cat([p[1] for p in parts])
    check_count(folder, split, len(labels))
    return images, labels


def check_count(folder: Path, split: str, count: int) -> None:
    expected = OFFICIAL_COUNTS[split]
    if count == expected or (os.environ.get("CIFAR10_ALLOW_SUBSET") == "1" and 0 < count < expected):
        return
    raise UserError(f"The {split} batches in {folder} hold {count:,} images, expected {expected:,}. The folder is "
                    "incomplete or not CIFAR-10: delete it so it is extracted again (set CIFAR10_ALLOW_SUBSET=1 "
                    "to accept a smaller subset on purpose).")


def read_class_names(folder: str | Path) -> list[str]:
    path = Path(folder) / "batches.meta"
    names = load_pickle(path).get("label_names")
    if not isinstance(names, list) or len(names) != NUM_CLASSES or not all(isinstance(n, str) for n in names):
        raise corrupt(path, f"'label_names' is not a list of {NUM_CLASSES} names")
    return names
