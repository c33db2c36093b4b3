"""Shared fixtures: a small CIFAR-10 archive in the official layout, served through file://."""

import hashlib
import io
import os
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
REAL_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "cifar10"


@dataclass(frozen=True)
class TinyArchive:
    path: Path  # the .tar.gz
    url: str  # file:// URL of it
    md5: str
    n_train: int
    n_test: int


def synthetic_images(labels: np.ndarray, seed: int) -> np.ndarray:
    """Learnable images: each class has its own colour and stripe direction, plus noise."""
    rng = np.random.default_rng(seed)
    colours = np.random.default_rng(1234).integers(40, 216, size=(10, 3, 1, 1))
    yy, xx = np.mgrid[0:32, 0:32]
    images = np.empty((len(labels), 3, 32, 32), dtype=np.uint8)
    for i, c in enumerate(labels):
        stripes = 30 * np.sin((xx if c % 2 else yy) * (1 + c // 2) * 0.4)
        noise = rng.normal(0, 20, size=(3, 32, 32))
        images[i] = np.clip(colours[c] + stripes + noise, 0, 255).astype(np.uint8)
    return images


def _pickle_batch(images: np.ndarray, labels: np.ndarray, label: str) -> bytes:
    return pickle.dumps(
        {
            "batch_label": label,
            "labels": [int(x) for x in labels],
            "data": images.reshape(len(images), -1),
            "filenames": [f"img_{i}.png" for i in range(len(images))],
        },
        protocol=2,
    )


def build_archive(path: Path, per_class_train: int = 30, per_class_test: int = 10, seed: int = 0) -> str:
    """Write a CIFAR-10 archive in the official python layout; return its md5."""
    rng = np.random.default_rng(seed)
    train_labels = rng.permutation(np.repeat(np.arange(10), per_class_train))
    test_labels = rng.permutation(np.repeat(np.arange(10), per_class_test))
    train = synthetic_images(train_labels, seed + 1)
    test = synthetic_images(test_labels, seed + 2)
    members = {f"data_batch_{i + 1}": _pickle_batch(x, y, f"training batch {i + 1} of 5")
               for i, (x, y) in enumerate(zip(np.array_split(train, 5), np.array_split(train_labels, 5)))}
    members["test_batch"] = _pickle_batch(test, test_labels, "testing batch 1 of 1")
    members["batches.meta"] = pickle.dumps(
        {"label_names": CLASSES, "num_cases_per_batch": len(train) // 5, "num_vis": 3072}, protocol=2)
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def tiny_archive(tmp_path_factory) -> TinyArchive:
    """A 300-train / 100-test archive (balanced classes) with its file:// URL and md5."""
    path = tmp_path_factory.mktemp("archive") / "cifar-10-python.tar.gz"
    md5 = build_archive(path)
    return TinyArchive(path=path, url=path.as_uri(), md5=md5, n_train=300, n_test=100)


@pytest.fixture(autouse=True)
def _allow_small_archives(monkeypatch):
    """The tiny archive is smaller than the official 50,000/10,000 split."""
    monkeypatch.setenv("CIFAR10_ALLOW_SUBSET", "1")


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The prepared real CIFAR-10 copy; skips when absent unless CIFAR10_REQUIRE_REAL=1."""
    prepared = Path(os.environ.get("CIFAR10_LOCAL_DIR", Path.home() / ".cache" / "cifar10-local"))
    if (prepared / "cifar-10-batches-py").is_dir():
        return prepared
    if os.environ.get("CIFAR10_REQUIRE_REAL") == "1":
        pytest.fail(f"real CIFAR-10 copy not found in {prepared}: run ../shared/cifar10/prepare.sh first")
    pytest.skip(f"real CIFAR-10 copy not prepared in {prepared}")
