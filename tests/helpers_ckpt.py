"""A tiny trained run (real Lightning Trainer, TensorBoard logs, best.ckpt) shared by the
checkpoint/evaluate/predict/export tests; trained once per test session."""

from dataclasses import dataclass
from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from cifar10.data import CIFAR10DataModule
from cifar10.models import create_model


@dataclass(frozen=True)
class TinyRun:
    run_dir: Path  # <logdir>/lenet/version_0
    ckpt: Path  # run_dir/checkpoints/best.ckpt
    data_dir: Path  # where the archive was extracted


_RUNS: dict[Path, TinyRun] = {}


def tiny_datamodule(archive, data_dir: Path, **kwargs) -> CIFAR10DataModule:
    return CIFAR10DataModule.from_keywords(data_dir=data_dir, url=archive.url, md5=archive.md5, on_device=False, **kwargs)


def train_tiny_run(archive, root: Path) -> TinyRun:
    """LeNet trained 2 epochs of 6 steps on the tiny archive, with dataset normalisation."""
    if root in _RUNS:
        return _RUNS[root]
    L.seed_everything(0, verbose=False)
    dm = tiny_datamodule(archive, root / "data", batch_size=40, val_size=60, augment="none", normalize="dataset")
    dm.prepare_data()
    dm.setup("fit")
    model = create_model("lenet", optimizer="adam", lr=3e-3, schedule="none",
                         mean=dm.mean, std=dm.std, class_names=dm.class_names)
    logger = TensorBoardLogger(save_dir=root / "logs", name="lenet", version=0)
    run_dir = Path(logger.log_dir)
    best = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor="val/acc", mode="max")
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=logger, callbacks=[best],
                        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1)
    trainer.fit(model, datamodule=dm)
    _RUNS[root] = TinyRun(run_dir=run_dir, ckpt=Path(best.best_model_path), data_dir=root / "data")
    return _RUNS[root]


@pytest.fixture(scope="session")
def tiny_run(tiny_archive, tmp_path_factory) -> TinyRun:
    """Import into a test module to use; every module gets the same run."""
    with pytest.MonkeyPatch.context() as mp:  # session fixtures start before conftest's autouse one
        mp.setenv("CIFAR10_ALLOW_SUBSET", "1")
        return train_tiny_run(tiny_archive, tmp_path_factory.getbasetemp() / "tiny_run")


def read_test_split(archive, run: TinyRun):
    """The archive's test images (uint8) and labels, read through the data module."""
    dm = tiny_datamodule(archive, run.data_dir, val_size=60, normalize="half")
    dm.setup("test")
    return dm.test_images, dm.test_labels
