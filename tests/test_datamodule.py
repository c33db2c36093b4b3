"""CIFAR10DataModule: split, batches, epoch order, normalisation, and a real tiny Lightning run."""

import logging

import lightning as L
import pytest
import torch
from torch.utils.data import BatchSampler

from cifar10.data import CLASSES, CIFAR10DataModule
from cifar10.errors import UserError
from cifar10.data.normalization import Normalize


def make_dm(archive, tmp_path, **kwargs) -> CIFAR10DataModule:
    options = dict(data_dir=tmp_path / "data", batch_size=64, val_size=50, augment="none", url=archive.url,
                   md5=archive.md5) | kwargs
    dm = CIFAR10DataModule.from_keywords(**options)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_setup_splits_stratified_and_seeded(tiny_archive, tmp_path):
    dm = make_dm(tiny_archive, tmp_path, val_size=50)
    assert dm.train_images.shape == (250, 3, 32, 32) and dm.train_images.dtype == torch.uint8
    assert dm.val_images.shape == (50, 3, 32, 32) and dm.test_images.shape == (100, 3, 32, 32)
    assert dm.train_labels.dtype == torch.int64 and tuple(dm.class_names) == CLASSES
    assert torch.bincount(dm.val_labels).tolist() == [5] * 10
    assert torch.bincount(dm.train_labels).tolist() == [25] * 10
    same = make_dm(tiny_archive, tmp_path)
    assert torch.equal(same.val_images, dm.val_images) and torch.equal(same.train_images, dm.train_images)
    other = make_dm(tiny_archive, tmp_path, seed=1)
    assert not torch.equal(other.val_images, dm.val_images)
    assert torch.bincount(make_dm(tiny_archive, tmp_path, val_size=0.2).val_labels).tolist() == [6] * 10


def test_setup_is_idempotent(tiny_archive, tmp_path):
    dm = make_dm(tiny_archive, tmp_path)
    images = dm.train_images
    dm.setup("fit")
    dm.setup("test")
    assert dm.train_images is images


def test_val_size_zero_trains_on_everything_and_validates_on_test(tiny_archive, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        dm = make_dm(tiny_archive, tmp_path, val_size=0)
    assert "validation runs on the test split" in caplog.text
    assert dm.val_images is None and dm.val_labels is None and len(dm.train_labels) == tiny_archive.n_train
    images, labels = next(iter(dm.val_dataloader()))
    assert torch.equal(images, dm.test_images[:64]) and torch.equal(labels, dm.test_labels[:64])


@pytest.mark.parametrize("val_size", [300, -1, 1.0, True, "50"])
def test_bad_val_size_is_a_user_error(tiny_archive, tmp_path, val_size):
    with pytest.raises(UserError, match="val_size"):
        make_dm(tiny_archive, tmp_path, val_size=val_size)


@pytest.mark.parametrize("option", ["augment", "normalize"])
def test_unknown_preset_lists_the_valid_ones(option):
    with pytest.raises(UserError, match="choose one of .*half|choose one of none, flip, crop-flip"):
        CIFAR10DataModule.from_keywords(**{option: "sparkles"})


def test_dataloaders_yield_uint8_batches_through_a_batch_sampler(tiny_archive, tmp_path):
    dm = make_dm(tiny_archive, tmp_path, batch_size=64, eval_batch_size=40)
    for loader, size, first in ((dm.train_dataloader(), 250, 64), (dm.val_dataloader(), 50, 40),
                                (dm.test_dataloader(), 100, 40), (dm.predict_dataloader(), 100, 40)):
        assert isinstance(loader.batch_sampler, BatchSampler) and hasattr(loader.dataset, "__getitems__")
        assert loader.num_workers == 0
        batches = list(loader)
        images, labels = batches[0][:2]
        assert images.shape == (first, 3, 32, 32) and images.dtype == torch.uint8 and labels.dtype == torch.int64
        assert sum(len(b[1]) for b in batches) == size


def epoch_order(dm: CIFAR10DataModule, epoch: int) -> torch.Tensor:
    loader = dm.train_dataloader()
    loader.batch_sampler.sampler.set_epoch(epoch)
    return torch.cat([labels for _, labels, _ in loader])


def test_train_order_depends_only_on_seed_and_epoch(tiny_archive, tmp_path):
    dm = make_dm(tiny_archive, tmp_path)
    first, second = epoch_order(dm, 0), epoch_order(dm, 1)
    fresh = make_dm(tiny_archive, tmp_path)
    assert torch.equal(epoch_order(fresh, 1), second)  # epoch 1 without running epoch 0 first
    assert torch.equal(epoch_order(fresh, 0), first)
    images = torch.cat([x for x, *_ in dm.train_dataloader()])
    assert not torch.equal(images, dm.train_images) and len(images) == len(dm.train_images)
    assert sorted(first.tolist()) == sorted(dm.train_labels.tolist())


def test_alternating_flip_trains_on_a_seeded_half_mirrored_copy(tiny_archive, tmp_path):
    dm = make_dm(tiny_archive, tmp_path, augment="shift-altflip", seed=1)
    served = dm.training_images()
    mirrored = torch.tensor([torch.equal(s, x.flip(-1)) for s, x in zip(served, dm.train_images)])
    kept = torch.tensor([torch.equal(s, x) for s, x in zip(served, dm.train_images)])
    assert bool((mirrored | kept).all()) and 0.3 < mirrored.float().mean() < 0.7
    assert torch.equal(served, make_dm(tiny_archive, tmp_path, augment="shift-altflip", seed=1).training_images())
    assert not torch.equal(served, make_dm(tiny_archive, tmp_path, augment="shift-altflip", seed=2).training_images())
    plain = make_dm(tiny_archive, tmp_path, augment="crop-flip")
    assert plain.training_images() is plain.train_images
    assert torch.equal(torch.cat([x for x, *_ in dm.train_dataloader()]).sort(0).values, served.sort(0).values)


def test_dataset_normalisation_matches_a_direct_float_computation(tiny_archive, tmp_path):
    dm = make_dm(tiny_archive, tmp_path, normalize="dataset")
    pixels = dm.train_images.double() / 255
    assert dm.mean == pytest.approx(pixels.mean((0, 2, 3)).tolist(), abs=1e-6)
    assert dm.std == pytest.approx(pixels.std((0, 2, 3), correction=0).tolist(), abs=1e-6)
    batch = dm.train_images[:8]
    mean, std = torch.tensor(dm.mean).view(3, 1, 1), torch.tensor(dm.std).view(3, 1, 1)
    torch.testing.assert_close(Normalize(dm.mean, dm.std)(batch), ((batch.double() / 255 - mean) / std).float())
    half = make_dm(tiny_archive, tmp_path, normalize="half")
    assert half.mean == half.std == (0.5, 0.5, 0.5)
    assert Normalize(half.mean, half.std)(torch.tensor([0, 255], dtype=torch.uint8).expand(3, 1, 2)).tolist() == \
        [[[-1.0, 1.0]]] * 3
    unit = make_dm(tiny_archive, tmp_path, normalize="none")
    pixels = torch.tensor([0, 51, 255], dtype=torch.uint8).expand(3, 1, 3)
    torch.testing.assert_close(Normalize(unit.mean, unit.std)(pixels), torch.tensor([0.0, 0.2, 1.0]).expand(3, 1, 3))


class Recorder(L.LightningModule):
    """A linear classifier that records the batches it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(3 * 32 * 32, 10)
        self.seen: dict[str, list[torch.Tensor]] = {"train": [], "val": []}

    def step(self, batch, stage: str):
        images, labels = batch
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 32, 32) and labels.dtype == torch.int64
        self.seen[stage].append(images.clone())  # uint8 as the data module hands them (the model normalises)
        return torch.nn.functional.cross_entropy(self.net(images.flatten(1).float() / 255), labels)

    def training_step(self, batch, batch_idx):
        return self.step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self.step(batch, "val")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit(dm, tmp_path, max_epochs: int, ckpt_path=None) -> Recorder:
    model = Recorder()
    trainer = L.Trainer(max_epochs=max_epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, enable_checkpointing=False)
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    if ckpt_path is None:
        trainer.save_checkpoint(tmp_path / f"epochs-{max_epochs}.ckpt")
    return model


def test_lightning_run_augments_training_only_and_resumes_exactly(tiny_archive, tmp_path):
    dm = make_dm(tiny_archive, tmp_path, batch_size=100, augment="crop-flip", normalize="half")
    full = fit(dm, tmp_path, max_epochs=2)
    assert len(full.seen["train"]) == 6 and len(full.seen["val"]) == 2 + 1  # + the sanity check
    assert torch.equal(full.seen["val"][-1], dm.val_images)  # validation is not augmented
    unaugmented = torch.cat([x for x, *_ in dm.train_dataloader()])
    assert not torch.equal(torch.cat(full.seen["train"][:3]), unaugmented)  # training is augmented
    fit(dm, tmp_path, max_epochs=1)
    resumed = fit(dm, tmp_path, max_epochs=2, ckpt_path=tmp_path / "epochs-1.ckpt")
    for ours, theirs in zip(resumed.seen["train"], full.seen["train"][3:], strict=True):
        assert torch.equal(ours, theirs)  # epoch 1 after resuming: same order, same augmentation


def test_training_batches_carry_their_number_in_the_epoch_also_after_a_resume(tiny_archive, tmp_path):
    dm = make_dm(tiny_archive, tmp_path, batch_size=64)
    assert [batch[2] for batch in dm.train_dataloader()] == [0, 1, 2, 3]  # 250 images
    dm.load_state_dict({"epoch": 0, "batches_done": 2})  # a checkpoint saved after two batches of epoch 0
    resumed = list(dm.train_dataloader())
    assert [batch[2] for batch in resumed] == [2, 3]  # the augmentation seeds of the batches left
    assert all(len(batch) == 2 for batch in dm.val_dataloader())  # evaluation batches: (images, labels)
