"""Normalisation: the channel statistics a model is given, and the module that applies them to pixels.

A preset names where the statistics come from: 'dataset', the per-channel mean and std of the training
split; 'half', 0.5 and 0.5 for every channel (pixels mapped to [-1, 1], as PyTorch's tutorial "Training a
Classifier" normalises CIFAR-10); 'none', pixels only scaled to [0, 1], as torchvision's ToTensor leaves them.
The model keeps them in its hyper-parameters and normalises its own uint8 input.
"""

from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import nn

from cifar10.errors import look_up

Stats = tuple[tuple[float, ...], tuple[float, ...]]  # (mean, std) per channel, in 0..1 pixel units
HALF: Stats = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
UNIT: Stats = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


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


def channel_stats(images: torch.Tensor, chunk: int = 1024) -> Stats:
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


def fixed(train_images: torch.Tensor, stats: Stats) -> Stats:
    """A preset whose statistics do not depend on the training images (bound with partial, so it pickles)."""
    return stats


# name -> the (mean, std) of the training images' preset
NORMALIZE_PRESETS: dict[str, Callable[[torch.Tensor], Stats]] = {
    "half": partial(fixed, stats=HALF), "dataset": channel_stats, "none": partial(fixed, stats=UNIT)}


def normalization_stats(preset: str) -> Callable[[torch.Tensor], Stats]:
    """The function that gives preset's (mean, std) of the training images; a UserError for an unknown name."""
    return look_up(NORMALIZE_PRESETS, preset, "normalisation preset")
