"""CIFAR-10 data: md5-verified download, our own batch reader, batched on-device augmentation."""

from cifar10.data.augment import AUGMENT_PRESETS, augment
from cifar10.data.batches import read_class_names, read_split
from cifar10.data.datamodule import CIFAR10DataModule
from cifar10.data.download import OFFICIAL_MD5, OFFICIAL_URL, download_archive, ensure_extracted
from cifar10.data.normalization import NORMALIZE_PRESETS, Normalize, channel_stats, normalize

CLASSES: tuple[str, ...] = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

__all__ = ["AUGMENT_PRESETS", "CIFAR10DataModule", "CLASSES", "NORMALIZE_PRESETS", "Normalize", "OFFICIAL_MD5",
           "OFFICIAL_URL", "augment", "channel_stats", "download_archive", "ensure_extracted", "normalize",
           "read_class_names", "read_split"]
