"""Batched pixel transforms: augmentation presets and normalisation, on the training device.

Every image gets its own random parameters, drawn from an explicit torch.Generator on the batch's
device; the result is uint8 of the same shape. Geometry is resampled once (nearest neighbour, zero
fill, as torchvision's defaults) and the colour jitter is one per-image 3x3 colour matrix.
"""

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cifar10.errors import UserError

AUGMENT_PRESETS = ("none", "flip", "crop-flip", "shift-altflip", "flip-rotate", "heavy")
ALTERNATING_FLIP = ("shift-altflip",)  # presets whose data module serves a pre-flipped training set
NORMALIZE_PRESETS = ("half", "dataset")


def check_augment(preset: str) -> str:
    if preset not in AUGMENT_PRESETS:
        raise UserError(f"Unknown augmentation preset {preset!r}. Valid presets: {', '.join(AUGMENT_PRESETS)}.")
    return preset


def check_normalize(preset: str) -> str:
    if preset not in NORMALIZE_PRESETS:
        raise UserError(f"Unknown normalisation preset {preset!r}. Valid presets: {', '.join(NORMALIZE_PRESETS)}.")
    return preset


def augment(images: torch.Tensor, preset: str, generator: torch.Generator, epoch: int = 0) -> torch.Tensor:
    """Apply `preset` to uint8 images (B, 3, H, W) of training epoch `epoch`; returns uint8 (B, 3, H, W).

    shift-altflip (airbench's): shift by up to 2 pixels with reflect padding, and mirror every image
    on odd epochs. Its data module pre-flips a random half of the training set once, so each image is
    seen both ways, alternately, rather than a random way each epoch.
    """
    check_augment(preset)
    if preset == "none" or len(images) == 0:
        return images
    if preset == "flip":
        return random_flip(images, generator)
    if preset == "crop-flip":
        return random_crop_flip(images, generator, padding=4)
    if preset == "shift-altflip":
        return random_crop_flip(images, generator, padding=2, reflect=True, mirror=epoch % 2 == 1)
    if preset == "flip-rotate":
        warped = warp(images, random_geometry(len(images), generator, degrees=10))
        return warped.to(torch.int32).to(torch.uint8)  # nearest sampling: already whole numbers in 0..255
    warped = warp(images, random_geometry(len(images), generator, degrees=10, shear=10, scale=(0.8, 1.2)))
    return to_uint8(color_jitter(warped, generator, strength=0.2))


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


class Normalize(nn.Module):
    """Pixels -> the network's input, (x/255 - mean)/std per channel, with mean and std in 0..1 units.

    Takes uint8 images (..., 3, H, W) as the data module and predict give them, or float pixels in [0, 1]
    (an exported model's input). Its buffers are not saved: a model keeps mean and std in its hyper-parameters.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.register_buffer("scale", 1 / (255 * std_t), persistent=False)
        self.register_buffer("shift", mean_t / std_t, persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8:
            return images.float().mul_(self.scale).sub_(self.shift)
        return images.float() * (255 * self.scale) - self.shift


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 images (..., 3, H, W) -> float32 (x/255 - mean)/std, with mean and std in 0..1 pixel units
    (a model's Normalize, as a function)."""
    return Normalize(mean, std).to(images.device)(images)


def denormalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """normalize undone: float images (..., 3, H, W) back to pixels in [0, 1] (clamped)."""
    mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x * std_t + mean_t).clamp(0, 1)


def channel_stats(images: torch.Tensor, chunk: int = 1024) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images (N, 3, H, W), in 0..1 units.

    Chunked, so no float copy of the whole set. Pixels are centred on 128 (exact in float32) so the
    per-row sums of squares, done as matrix products (fast on CPU), stay accurate.
    """
    total = torch.zeros(3, dtype=torch.float64, device=images.device)
    squares = torch.zeros_like(total)
    for part in images.split(chunk):
        rows = part.flatten(2).flatten(0, 1).float().sub_(128)  # (n*3, H*W)
        ones = torch.ones(rows.shape[1], 1, device=images.device)
        total += (rows @ ones).view(-1, 3).sum(0, dtype=torch.float64)
        squares += torch.bmm(rows.unsqueeze(1), rows.unsqueeze(2)).view(-1, 3).sum(0, dtype=torch.float64)
    count = images.numel() // 3
    centred_mean = total / count
    std = (squares / count - centred_mean**2).clamp_min(0).sqrt()
    return tuple(((centred_mean + 128) / 255).tolist()), tuple((std / 255).tolist())
