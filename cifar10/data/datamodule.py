"""CIFAR10DataModule: uint8 tensors held once, batches by one fancy-index, augmentation on the device.

Batches stay uint8: the model normalises its own input (ClassifierModule.normalize), with the channel
statistics this module computes (`mean`, `std`) saved in its hyper-parameters.
"""

from collections.abc import Callable
from pathlib import Path
from dataclasses import asdict
from typing import Any, NamedTuple

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from cifar10.data.augment import augment_preset
from cifar10.data.batches import read_class_names, read_split
from cifar10.data.download import OFFICIAL_MD5, OFFICIAL_URL, ensure_extracted
from cifar10.data.normalization import HALF, normalization_stats
from cifar10.errors import UserError
from cifar10.lightning_internals import batches_done, uses_distributed_sampler
from cifar10.seeds import AUGMENT_STREAM, PREFLIP_STREAM, SAMPLER_STREAM, stream_seed
from cifar10.settings import DataSettings


class NumberedIndices(NamedTuple):
    """A training batch's indices and its number within the epoch (which seeds its augmentation)."""

    number: int
    indices: torch.Tensor


class TensorPairs(Dataset):
    """(image, label) pairs over two tensors; __getitems__ fetches a whole batch with one index_select
    (row copies, about 10x faster than element-wise fancy indexing of uint8 on CPU). Given NumberedIndices,
    the batch is (images, labels, number)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: list[int] | torch.Tensor | NumberedIndices) -> tuple:
        if isinstance(indices, NumberedIndices):
            return *self.__getitems__(indices.indices), indices.number
        index = torch.as_tensor(indices, device=self.labels.device)
        return self.images.index_select(0, index), self.labels.index_select(0, index)


class TensorBatches(BatchSampler):
    """A BatchSampler that yields each batch's indices as one tensor on `device`.

    The epoch's order is copied to the device once, so a CUDA run makes no host-to-device copy, and
    no host synchronisation, per step. `skip(epoch)` says how many batches of that epoch were done
    before the run was interrupted; those are left out, so a resumed epoch goes on where it stopped.
    `numbered`: yield NumberedIndices, so each batch carries its number within the epoch.
    """

    def __init__(self, sampler: Sampler[int], batch_size: int, device: torch.device,
                 skip: Callable[[int], int] = lambda epoch: 0, numbered: bool = False) -> None:
        super().__init__(sampler, batch_size, drop_last=False)
        self.device, self.skip, self.numbered = device, skip, numbered

    def __iter__(self):  # a generator: the order is drawn at the first batch, after Lightning's set_epoch
        done = self.skip(getattr(self.sampler, "epoch", 0))
        done = 0 if done >= len(self) else done  # a whole epoch done: the checkpoint came after it
        batches = self._order().split(self.batch_size)[done:]
        if not self.numbered:
            yield from batches
        else:
            yield from (NumberedIndices(number, indices) for number, indices in enumerate(batches, start=done))


    def _order(self) -> torch.Tensor:
        """The epoch's indices on the device: one copy from pinned memory that does not block the host
        (our samplers give a tensor; any other sampler's indices go through a list)."""
        order = self.sampler.order() if hasattr(self.sampler, "order") else torch.as_tensor(list(self.sampler))
        if self.device.type == "cuda":
            return order.pin_memory().to(self.device, non_blocking=True)
        return order.to(self.device)


def keep_batch(batch):
    """collate_fn: __getitems__ already returns the batch."""
    return batch


class EpochShuffler(Sampler[int]):
    """Random order drawn from (seed, epoch): epoch e has the same order whether or not the run was resumed.

    Under DDP, rank r of w takes every w-th index of that order (wrapped round to a multiple of w, so
    every rank has as many batches): the union of the ranks' k-th batches of b images is exactly the
    k-th batch of w*b images a single process draws, so DDP trains like one process at the global batch.
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.size, self.seed, self.epoch, self.rank, self.world_size = size, seed, 0, rank, world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.size // self.world_size)

    def order(self) -> torch.Tensor:
        """This epoch's indices for this rank, as a tensor on the CPU."""
        generator = torch.Generator().manual_seed(stream_seed(self.seed, self.epoch, SAMPLER_STREAM))
        order = torch.randperm(self.size, generator=generator)
        order = torch.cat([order, order[:len(self) * self.world_size - self.size]])
        return order[self.rank::self.world_size]

    def __iter__(self):
        return iter(self.order().tolist())


class Shard(Sampler[int]):
    """Evaluation order: 0..size-1, or under DDP every world_size-th index from rank (no padding,
    so each image is counted once when the metrics are synchronised)."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = range(rank, size, world_size)

    def __len__(self) -> int:
        return len(self.indices)

    def order(self) -> torch.Tensor:
        return torch.arange(self.indices.start, self.indices.stop, self.indices.step)

    def __iter__(self):
        return iter(self.indices)


def stratified_split(labels: torch.Tensor, val_size: int | float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, val indices): val_size images (a count, or a fraction of all) drawn per class
    in proportion to its size (largest remainders), seeded; both index tensors sorted."""
    n = len(labels)
    count = round(val_size * n) if isinstance(val_size, float) else val_size
    classes, sizes = torch.unique(labels, return_counts=True)
    exact = sizes.double() * count / n
    quota = exact.floor().long()
    extra = count - int(quota.sum())
    quota[torch.argsort(exact - quota, descending=True, stable=True)[:extra]] += 1
    generator = torch.Generator().manual_seed(seed)
    val = []
    for c, k in zip(classes.tolist(), quota.tolist()):
        members = (labels == c).nonzero().flatten()
        val.append(members[torch.randperm(len(members), generator=generator)[:k]])
    val_index = torch.cat(val).sort().values
    is_train = torch.ones(n, dtype=torch.bool)
    is_train[val_index] = False
    return is_train.nonzero().flatten(), val_index


def check_val_size(val_size: int | float, n_train: int) -> None:
    fraction_ok = isinstance(val_size, float) and 0 <= val_size < 1
    count_ok = isinstance(val_size, int) and not isinstance(val_size, bool) and 0 <= val_size < n_train
    if not (fraction_ok or count_ok):
        raise UserError(f"val_size {val_size!r} is not valid: give a count of images from 0 to {n_train - 1:,} "
                        "(0 validates on the test split) or a fraction in [0, 1) of the training set.")


class CIFAR10DataModule(L.LightningDataModule):
    """CIFAR-10 as uint8 tensors: download, read, split, batch; augment after transfer.

    `augment` names the preset (cifar10.data.augment.AUGMENT_PRESETS) that prepares the training set and
    augments its batches; `normalize` the channel statistics the model is given
    (cifar10.data.normalization.NORMALIZE_PRESETS: 'dataset', of the training split, or 'half', 0.5 and 0.5).
    """

    def __init__(self, settings: DataSettings | None = None, eval_batch_size: int | None = None,
                 on_device: bool = True) -> None:
        """settings: the data section (default: every field's default; url, md5 None: the official archive)."""
        super().__init__()
        s = settings or DataSettings()
        # saved in checkpoints (datamodule_hyper_parameters) as plain values: a resumed run reads its data settings
        # back; not sent to the loggers, which get the settings' view without paths (fit_flow.logged_params)
        self.save_hyperparameters(asdict(s) | {"data_dir": str(s.data_dir)}, logger=False)
        self.data_dir = Path(s.data_dir).expanduser()
        self.batch_size, self.eval_batch_size = s.batch_size, eval_batch_size or s.batch_size
        self.val_size, self.seed, self.on_device = s.val_size, s.seed, on_device
        self.url, self.md5 = s.url or OFFICIAL_URL, s.md5 or OFFICIAL_MD5
        self.augment, self.normalize = s.augment, s.normalize
        self.preset, self.normalization = augment_preset(s.augment), normalization_stats(s.normalize)
        self.class_names: list[str] = []
        self.mean, self.std = HALF  # until the training split is read
        self.train_images = self.train_labels = self.val_images = self.val_labels = None
        self.test_images = self.test_labels = None
        self._generator: torch.Generator | None = None
        self._resume_at: tuple[int, int] | None = None  # (epoch, batches done) of an interrupted run

    @classmethod
    def from_keywords(cls, *, eval_batch_size: int | None = None, on_device: bool = True,
                      **settings: Any) -> "CIFAR10DataModule":
        """For programs and tests: the data section's fields as keywords (`data_dir=..., batch_size=64`), the
        others their defaults."""
        return cls(DataSettings(**settings), eval_batch_size, on_device)

    def prepare_data(self) -> None:
        ensure_extracted(self.data_dir, self.url, self.md5)

    def setup(self, stage: str | None = None) -> None:
        """Read the splits `stage` needs: all of them to fit, the test split alone to test or predict."""
        if self.test_images is None:
            self._load_test()
        if self.train_images is None and stage not in ("test", "predict"):
            self._load_train()
        self.move_to(self._target_device())

    def _load_test(self) -> None:
        folder = ensure_extracted(self.data_dir, self.url, self.md5)  # no-op after prepare_data
        self.class_names = read_class_names(folder)
        self.test_images, self.test_labels = read_split(folder, "test")

    def _load_train(self) -> None:
        images, labels = read_split(ensure_extracted(self.data_dir, self.url, self.md5), "train")
        check_val_size(self.val_size, len(labels))
        if self.val_size:
            train_index, val_index = stratified_split(labels, self.val_size, self.seed)
            self.train_images, self.train_labels = images[train_index], labels[train_index]
            self.val_images, self.val_labels = images[val_index], labels[val_index]
        else:
            self.train_images, self.train_labels = images, labels
            rank_zero_info("val_size=0: training on all training images; validation runs on the test split.")
        self.mean, self.std = self.normalization(self.train_images)

    def _target_device(self) -> torch.device:
        trainer = self.trainer
        if self.on_device and trainer is not None and trainer.strategy.root_device.type == "cuda":
            return trainer.strategy.root_device
        return self.test_labels.device

    def move_to(self, device: torch.device) -> None:
        """Hold every split read so far on `device` (setup does this for a CUDA trainer)."""
        for name in ("train_images", "train_labels", "val_images", "val_labels", "test_images", "test_labels"):
            if getattr(self, name) is not None and getattr(self, name).device != device:
                setattr(self, name, getattr(self, name).to(device))

    def _loader(self, images: torch.Tensor, labels: torch.Tensor, sampler: Sampler, batch_size: int,
                skip: Callable[[int], int] = lambda epoch: 0, numbered: bool = False) -> DataLoader:
        batches = TensorBatches(sampler, batch_size, labels.device, skip, numbered)
        return DataLoader(TensorPairs(images, labels), batch_sampler=batches, collate_fn=keep_batch, num_workers=0)

    def shard(self) -> tuple[int, int]:
        """(rank, world size) of the attached trainer; this module shards the data itself under DDP."""
        trainer = self.trainer
        if trainer is None or trainer.world_size == 1:
            return 0, 1
        if uses_distributed_sampler(trainer):
            raise UserError("CIFAR10DataModule shards the data itself under DDP: create the Trainer with "
                            "use_distributed_sampler=False (python -m cifar10.fit does).")
        return trainer.global_rank, trainer.world_size

    def train_dataloader(self) -> DataLoader:
        sampler = EpochShuffler(len(self.train_labels), self.seed, *self.shard())
        return self._loader(self.training_images(), self.train_labels, sampler, self.batch_size, self._batches_done,
                            numbered=True)

    def training_images(self) -> torch.Tensor:
        """The images training batches come from, as the preset prepares them (shift-altflip: a seeded random
        half mirrored once), from a generator seeded the same on every rank and after a resume."""
        generator = torch.Generator(self.train_images.device)
        return self.preset.prepare(self.train_images, generator.manual_seed(stream_seed(self.seed, 0, PREFLIP_STREAM)))

    def _batches_done(self, epoch: int) -> int:
        """Batches of `epoch` trained before the checkpoint this run resumed from (once; else 0)."""
        if self._resume_at is None or self._resume_at[0] != epoch:
            return 0
        done, self._resume_at = self._resume_at[1], None
        return done

    def state_dict(self) -> dict[str, int]:
        """Where training stands, saved in every checkpoint: a mid-epoch resume skips the batches done."""
        trainer = self.trainer
        if trainer is None or trainer.state.fn != "fit":
            return {}
        # batches_in_epoch tells a stop inside an epoch from the epoch's end (only the former pins the batch size)
        total = trainer.num_training_batches  # inf until the training data is set up
        return {"epoch": trainer.current_epoch, "batches_done": batches_done(trainer),
                "batches_in_epoch": int(total) if total != float("inf") else None}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state:
            self._resume_at = (state["epoch"], state["batches_done"])

    def _eval_loader(self, images: torch.Tensor, labels: torch.Tensor) -> DataLoader:
        return self._loader(images, labels, Shard(len(labels), *self.shard()), self.eval_batch_size)

    def val_dataloader(self) -> DataLoader:
        if self.val_images is None:
            return self._eval_loader(self.test_images, self.test_labels)
        return self._eval_loader(self.val_images, self.val_labels)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_images, self.test_labels)

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_images, self.test_labels)

    def augment_generator(self, device: torch.device, batch: int) -> torch.Generator:
        """The augmentation generator, seeded from (seed, epoch, rank, batch) for each training batch, so a
        run resumed mid-epoch draws what an uninterrupted one does."""
        trainer = self.trainer
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device)
        seed = stream_seed(self.seed, trainer.current_epoch, AUGMENT_STREAM, trainer.global_rank, batch)
        return self._generator.manual_seed(seed)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """A training batch (images, labels, its number in the epoch) leaves as augmented (images, labels)."""
        if isinstance(batch, torch.Tensor) or len(batch) == 2:  # example_input_array (ModelSummary); evaluation
            return batch
        images, labels, number = batch
        if self.preset.augments and len(images):
            generator = self.augment_generator(images.device, number)
            images = self.preset.apply(images, generator, self.trainer.current_epoch)
        return images, labels
