"""Test-time augmentation: the logits of a test batch averaged over transformed copies of it.

TTA_MODES maps each --tta name to its function (model, normalised images) -> logits, as airbench94
dispatches its TTA levels through a table (infer_basic, infer_mirror, infer_mirror_translate). Each
average is taken in float32: bf16 logits (autocast) keep 8 bits of mantissa, so their mean would flip
near-ties.
"""

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from cifar10.errors import look_up

Model = Callable[[Tensor], Tensor]  # normalised images -> logits, e.g. ClassifierModule.classify


def plain(model: Model, images: Tensor) -> Tensor:
    """The images as they are: the model's own logits (its dtype)."""
    return model(images)


def mirrored(model: Model, images: Tensor) -> Tensor:
    """The image and its left-right mirror."""
    # averaged in float32: bf16 logits (autocast) keep 8 bits of mantissa, so their mean would flip near-ties
    return (model(images).float() + model(images.flip(-1)).float()) / 2


def mirrored_and_shifted(model: Model, images: Tensor) -> Tensor:
    """Half `mirrored`, half the same for the image shifted one pixel up-left and one down-right (reflect
    padding), as airbench evaluates."""
    h, w = images.shape[-2:]
    padded = F.pad(images, (1, 1, 1, 1), mode="reflect")
    shifted = (mirrored(model, padded[..., :h, :w]) + mirrored(model, padded[..., 2:, 2:])) / 2
    return (mirrored(model, images) + shifted) / 2


TTA_MODES: dict[str, Callable[[Model, Tensor], Tensor]] = {
    "none": plain, "flip": mirrored, "flip-shift": mirrored_and_shifted,
}


def tta_mode(name: str) -> Callable[[Model, Tensor], Tensor]:
    """The function of test-time augmentation `name`; a UserError naming the modes for an unknown one."""
    return look_up(TTA_MODES, name, "test-time augmentation")


def augmented_logits(model: Model, images: Tensor, tta: str = "none") -> Tensor:
    """Logits of normalised images (`model`: e.g. ClassifierModule.classify), averaged over the test-time
    augmentations of mode `tta` (TTA_MODES)."""
    return tta_mode(tta)(model, images)
