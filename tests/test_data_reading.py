"""Our reader of the pickled batches: tensors, validation, and corrupt files reported by name."""

import os
import pickle

import numpy as np
import pytest
import torch

from cifar10.data import CLASSES
from cifar10.data.batches import read_batch, read_class_names, read_split
from cifar10.data.download import ensure_extracted
from cifar10.errors import UserError


@pytest.fixture
def folder(tiny_archive, tmp_path):
    return ensure_extracted(tmp_path, tiny_archive.url, tiny_archive.md5)


def test_reads_uint8_images_int64_labels_and_class_names(folder, tiny_archive):
    images, labels = read_split(folder, "train")
    assert images.shape == (tiny_archive.n_train, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64 and torch.bincount(labels).tolist() == [30] * 10
    raw = pickle.load(open(folder / "data_batch_1", "rb"), encoding="latin1")
    assert torch.equal(images[0], torch.from_numpy(raw["data"][0]).view(3, 32, 32))  # channel-first layout
    assert read_class_names(folder) == list(CLASSES)
    assert read_split(folder, "test")[0].shape == (tiny_archive.n_test, 3, 32, 32)


def test_truncated_batch_is_reported_by_name(folder):
    path = folder / "data_batch_3"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(UserError, match="data_batch_3.*truncated or corrupt"):
        read_split(folder, "train")


def test_garbage_batch_is_reported_by_name(folder):
    (folder / "test_batch").write_bytes(os.urandom(2000))
    with pytest.raises(UserError, match="test_batch"):
        read_split(folder, "test")


def write_batch(path, **content):
    path.write_bytes(pickle.dumps(content, protocol=2))


@pytest.mark.parametrize("content, why", [
    (dict(data=np.zeros((4, 3072), np.float32), labels=[0] * 4), "uint8"),
    (dict(data=np.zeros((4, 1000), np.uint8), labels=[0] * 4), "shape"),
    (dict(data=np.zeros((4, 3072), np.uint8), labels=[0] * 3), "4 images but 3 labels"),
    (dict(data=np.zeros((4, 3072), np.uint8), labels=[0, 1, 2, 10]), "labels outside 0..9"),
])
def test_malformed_batch_contents_are_reported(tmp_path, content, why):
    write_batch(tmp_path / "data_batch_1", **content)
    with pytest.raises(UserError, match=f"data_batch_1.*{why}"):
        read_batch(tmp_path / "data_batch_1")


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_pickles_that_would_run_code_are_refused(tmp_path):
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({"data": RunsCode(tmp_path / "ran")}, protocol=2))
    with pytest.raises(UserError, match="data_batch_1.*unexpected object posix.mkdir"):
        read_batch(tmp_path / "data_batch_1")
    assert not (tmp_path / "ran").exists()


def test_missing_batch_file_is_named(folder):
    (folder / "data_batch_5").unlink()
    with pytest.raises(UserError, match="data_batch_5 is missing"):
        read_split(folder, "train")


def test_bad_class_names_are_reported(folder):
    write_batch(folder / "batches.meta", label_names=["cat", "dog"])
    with pytest.raises(UserError, match="batches.meta"):
        read_class_names(folder)


def test_subset_needs_the_explicit_opt_in(folder, monkeypatch):
    monkeypatch.delenv("CIFAR10_ALLOW_SUBSET")
    with pytest.raises(UserError, match="300 images, expected 50,000.*CIFAR10_ALLOW_SUBSET=1"):
        read_split(folder, "train")


def test_reads_the_real_prepared_copy(real_data_dir, monkeypatch):
    monkeypatch.delenv("CIFAR10_ALLOW_SUBSET")
    folder = real_data_dir / "cifar-10-batches-py"
    train_images, train_labels = read_split(folder, "train")
    test_images, test_labels = read_split(folder, "test")
    assert train_images.shape == (50_000, 3, 32, 32) and test_images.shape == (10_000, 3, 32, 32)
    assert train_images.dtype == torch.uint8 and train_labels.dtype == torch.int64
    assert torch.bincount(train_labels).tolist() == [5_000] * 10
    assert torch.bincount(test_labels).tolist() == [1_000] * 10
    assert read_class_names(folder) == list(CLASSES)
