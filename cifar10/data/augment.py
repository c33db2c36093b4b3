"""Batched pixel transforms: the augmentation presets, on the training device.

Every image gets its own random parameters, drawn from an explicit torch.Generator on the batch's
device; the result is uint8 of the same shape. Geometry is resampled once (nearest neighbour, zero
fill, as torchvision's defaults) and the colour jitter is one per-image 3x3 colour matrix.
"""

import math

import torch
import torch.nn.functional as F

from cifar10.errors import look_up


class AugmentPreset:
    """What a preset does to training images: `prepare` once to the training set, `apply` to each batch.

    The data module calls both with generators it seeds (cifar10.seeds), so their draws, and a resumed
    run's, are the same on every rank; it draws nothing for a preset that does not `augments`.
    """

    augments = True  # False: batches pass unchanged, so no generator is seeded for them

    def prepare(self, train_images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The images training batches come from (the training set itself unless the preset says otherwise)."""
        return train_images

    def apply(self, images: torch.Tensor, generator: torch.Generator, epoch: int) -> torch.Tensor:
        """uint8 images (B, 3, H, W) of training epoch `epoch`, augmented: uint8 (B, 3, H, W)."""
        raise NotImplementedError


class NoAugmentation(AugmentPreset):
    augments = False

    def apply(self, images: torch.Tensor, generator: torch.Generator, epoch: int) -> torch.Tensor:
        return images


class Flip(AugmentPreset):
    """Mirror each image left-right with probability 1/2."""

    def apply(self, images: torch.Tensor, generator: torch.Generator, epoch: int) -> torch.Tensor:
        return random_flip(images, generator)


class CropFlip(AugmentPreset):
    """Random 32x32 crop of the zero-padded (4 pixels) image, and a random mirror."""

    def apply(self, images: torch.Tensor, generator: torch.Generator, epoch: int) -> torch.Tensor:
        return random_crop_flip(images, generator, padding=4)


class ShiftAltFlip(AugmentPreset):
    """airbench's: shift by up to 2 pixels with reflect padding, and mirror every image on odd epochs.

    A seeded random half of the training set is mirrored once beforehand (`prepare`), so each image is
    seen both ways, alternately, rather than a random way each epoch.
    """

    def prepare(self, train_images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return random_flip(train_images, generator)

    def apply(self, images: torch.Tensor, generator: torch.Generator, epoch: int) -> torch.Tensor:
        return random_crop_flip(images, generator, padding=2, reflect=True, mirror=epoch % 2 == 1)


class FlipRotate(AugmentPreset):
    """A random mirror and a rotation of up to 10 degrees (nearest neighbour, zero fill)."""

    def apply(self, images: torch.Tensor, generator: torch.Generator, epoch: int) -> torch.Tensor:
        warped = warp(images, random_geometry(len(images), generator, degrees=10))
        return warped.to(torch.int32).to(torch.uint8)  # nearest sampling: already whole numbers in 0..255


class Heavy(AugmentPreset):
    """A random mirror, rotation (10 degrees), x-shear (10 degrees) and scale (0.8-1.2), then colour jitter
    (brightness, contrast and saturation, 0.2 each)."""

    def apply(self, images: torch.Tensor, generator: torch.Generator, epoch: int) -> torch.Tensor:
        warped = warp(images, random_geometry(len(images), generator, degrees=10, shear=10, scale=(0.8, 1.2)))
        return to_uint8(color_jitter(warped, generator, strength=0.2))


AUGMENT_PRESETS: dict[str, AugmentPreset] = {
    "none": NoAugmentation(), "flip": Flip(), "crop-flip": CropFlip(), "shift-altflip": ShiftAltFlip(),
    "flip-rotate": FlipRotate(), "heavy": Heavy(),
}


def augment_preset(name: str) -> AugmentPreset:
    """The preset called `name`; a UserError naming the presets for an unknown one."""
    return look_up(AUGMENT_PRESETS, name, "augmentation preset")


def augment(images: torch.Tensor, preset: str, generator: torch.Generator, epoch: int = 0) -> torch.Tensor:
    """Apply preset `preset` to uint8 images (B, 3, H, W) of training epoch `epoch`; returns uint8 (B, 3, H, W).

    The batch only: a preset's preparation of the training set (shift-altflip's pre-flip) is the data
    module's to run, once (AugmentPreset.prepare).
    """
    chosen = augment_preset(preset)
    if len(images) == 0:
        return images
    return chosen.apply(images, generator, epoch)


def uniform(n: int, generator: torch.Generator, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=generator.device) * (high - low) + low


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    return choose(uniform(len(images), generator) < 0.5, images.flip(-1), images)


def choose(mask: torch.Tensor, if_true: torch.Tensor, if_false: torch.Tensor) -> torch.Tensor:
    """Per-image torch.where; uint8 rows of whole 8-byte words go through an int64 view (8x fewer elements)."""
    mask = mask.view(-1, *[1] * (if_true.dim() - 1))
    if if_true.dtype == torch.uint8 and if_true.shape[-1] % 8 == 0 and if_true.is_contiguous() \
            and if_false.is_contiguous():
        return torch.where(mask, if_true.view(torch.int64), if_false.view(torch.int64)).view(torch.uint8)
    return torch.where(mask, if_true, if_false)


def random_crop_flip(images: torch.Tensor, generator: torch.Generator, padding: int, reflect: bool = False,
                     mirror: bool | None = None) -> torch.Tensor:
    """Random crop of the padded images back to their size, and a flip, as one row gather.

    Zero padding, or with `reflect` mirror padding. `mirror`: None flips each image with probability
    1/2, True flips all, False none. Each output row is `w` contiguous bytes of the padded batch or of
    its mirror image, so the whole crop is one index_select over row windows: memcpy speed, unlike
    element-wise indexing. (Mirroring before the crop has the same distribution as after: the offset
    is uniform, the padding symmetric.)
    """
    n, c, h, w = images.shape
    hp, wp, device = h + 2 * padding, w + 2 * padding, images.device
    if reflect:
        padded = images.index_select(2, reflected(h, padding, device)).index_select(3, reflected(w, padding, device))
    else:
        padded = F.pad(images, (padding,) * 4)
    canvas = torch.stack([padded, padded.flip(-1)])  # the padded images, then their mirror images
    rows = canvas.flatten().unfold(0, w, 1)  # a view: a row window at every byte
    dy, dx = (torch.randint(2 * padding + 1, (n, 1, 1), generator=generator, device=device) for _ in "yx")
    if mirror is None:
        mirrored = (uniform(n, generator) < 0.5).long().view(n, 1, 1)
    else:
        mirrored = torch.full((n, 1, 1), int(mirror), device=device)
    image = (torch.arange(n, device=device).view(n, 1, 1) + n * mirrored) * c + torch.arange(c, device=device).view(c, 1)
    starts = image * hp * wp + (dy + torch.arange(h, device=device)) * wp + dx
    return rows.index_select(0, starts.flatten()).view(n, c, h, w)


def reflected(size: int, padding: int, device: torch.device) -> torch.Tensor:
    """Source positions along a reflect-padded axis: with padding 2, -2 -1 0 .. n-1 n n+1 read 2 1 0 .. n-1 n-2 n-3."""
    position = torch.arange(-padding, size + padding, device=device).abs()
    return torch.where(position >= size, 2 * (size - 1) - position, position)


def random_geometry(n: int, generator: torch.Generator, degrees: float, shear: float = 0.0,
                    scale: tuple[float, float] = (1.0, 1.0)) -> torch.Tensor:
    """Per-image affine_grid matrices (n, 2, 3) for: flip, rotate, then x-shear and scale.

    affine_grid maps output to input coordinates, so this is the inverse of the forward map
    scale * shear @ rotate @ flip, written out in closed form.
    """
    flip = torch.where(uniform(n, generator) < 0.5, -1.0, 1.0)
    angle = uniform(n, generator, -math.radians(degrees), math.radians(degrees))
    tan_shear = torch.tan(uniform(n, generator, -math.radians(shear), math.radians(shear)))
    zoom = uniform(n, generator, *scale)
    cos, sin = torch.cos(angle), torch.sin(angle)
    zero = torch.zeros_like(cos)
    rows = [flip * cos, flip * (sin - cos * tan_shear), zero, -sin, cos + sin * tan_shear, zero]
    return (torch.stack(rows, 1) / zoom[:, None]).view(n, 2, 3)


def warp(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample uint8 images through per-image affine maps -> float32 in 0..255 (nearest, zero fill)."""
    grid = affine_grid(theta, *images.shape[-2:])
    return F.grid_sample(images.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)


def affine_grid(theta: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """F.affine_grid(theta, (n, c, h, w), align_corners=False), computed as broadcast outer sums.

    Same grid, written straight into the (n, h, w, 2) layout grid_sample reads; F.affine_grid's
    batched matrix product is several times slower on CPU for small images.
    """
    xs = (torch.arange(w, dtype=theta.dtype, device=theta.device) * 2 + 1) / w - 1
    ys = (torch.arange(h, dtype=theta.dtype, device=theta.device) * 2 + 1) / h - 1
    n = len(theta)
    by_x = theta[:, :, 0].view(n, 1, 1, 2) * xs.view(1, 1, w, 1)
    by_y_and_shift = torch.addcmul(theta[:, :, 2].view(n, 1, 1, 2), theta[:, :, 1].view(n, 1, 1, 2), ys.view(1, h, 1, 1))
    return by_x + by_y_and_shift  # one pass over the (n, h, w, 2) output


GRAY = (0.299, 0.587, 0.114)


def color_jitter(x: torch.Tensor, generator: torch.Generator, strength: float) -> torch.Tensor:
    """Brightness, contrast and saturation factors in [1-s, 1+s] per image on float (B, 3, H, W) in 0..255.

    Without clamping in between, the three blends compose into one colour matrix and offset per image:
    out = b*c*(s*x + (1-s)*gray(x)) + b*(1-c)*mean(gray(x)).
    """
    n = len(x)
    b, c, s = (uniform(n, generator, 1 - strength, 1 + strength) for _ in "bcs")
    gray = torch.stack([torch.full((), w, device=x.device) for w in GRAY])  # fills: torch.tensor copies from the host
    eye = torch.eye(3, device=x.device)
    matrix = (b * c)[:, None, None] * (s[:, None, None] * eye + (1 - s)[:, None, None] * gray)  # (n, 3, 3)
    mean_gray = torch.einsum("c,nc->n", gray, x.mean((2, 3)))
    offset = b * (1 - c) * mean_gray
    out = torch.baddbmm(offset.view(n, 1, 1).expand(n, 3, 1), matrix, x.flatten(2))
    return out.view_as(x)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Round float pixels to uint8, clamped to 0..255 (via int32: faster than float -> uint8 on CPU)."""
    return x.add_(0.5).clamp_(0, 255).to(torch.int32).to(torch.uint8)
