"""A small fast network in the style of the CIFAR-10 speed records (Keller Jordan's airbench94).

Layout as airbench94 publishes it (94% in about 10 epochs with its own training tricks): a 2x2 patch
conv to 24 channels without BN, initialised to whiten the input patches (the 12 eigen-directions of
the patch covariance, with both signs) and kept frozen; GELU; three blocks of
conv3x3-maxpool2-BN-GELU, conv3x3-BN-GELU with widths 64/256/256 (31 -> 15 -> 7 -> 3 pixels);
max-pool 3; linear 256-10 without bias, its output scaled by a fixed 1/9.
As in airbench: bias-free convs whose first filters start as identities (dirac), BN with frozen unit
weights, eps 1e-12 and momentum 0.4 (PyTorch's convention). The whitening comes from the first 5,000
training images when the trainer's data module offers them (`train_images`, `normalize_images`);
otherwise the patch conv keeps its random start, which still trains (tests do this).
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cifar10.models import register
from cifar10.models.base import ClassifierModule

WIDTHS = (64, 256, 256)
WHITEN_CHANNELS = 24  # 2 signs x 3 colours x 2 x 2 patch
WHITEN_IMAGES = 5000


class Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        return x * self.factor


def batch_norm(channels: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels, eps=1e-12, momentum=0.4)
    bn.weight.requires_grad_(False)
    return bn


def conv(c_in: int, c_out: int) -> nn.Conv2d:
    layer = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(layer.weight[:c_in])
    return layer


def conv_group(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(conv(c_in, c_out), nn.MaxPool2d(2), batch_norm(c_out), nn.GELU(),
                         conv(c_out, c_out), batch_norm(c_out), nn.GELU())


@torch.no_grad()
def whiten_(layer: nn.Conv2d, images: Tensor, eps: float = 5e-4) -> None:
    """Set a 2x2 conv's filters to +/- the whitening transform of the images' 2x2 patches."""
    patches = F.unfold(images.float(), layer.kernel_size).transpose(1, 2).reshape(-1, layer.weight[0].numel())
    eigenvalues, eigenvectors = torch.linalg.eigh(patches.double().T.cov())
    filters = (eigenvectors.T / (eigenvalues + eps).sqrt()[:, None]).float().view(-1, *layer.weight.shape[1:])
    layer.weight.copy_(torch.cat([filters, -filters]))
    layer.bias.zero_()


@register("speedrun", published="airbench94-style net: 94% in about 10 epochs with airbench's own training; "
                                "tuned in the speed issue")
class Speedrun(ClassifierModule):
    def build_net(self) -> nn.Module:
        whiten = nn.Conv2d(3, WHITEN_CHANNELS, 2)
        whiten.weight.requires_grad_(False)
        return nn.Sequential(
            whiten, nn.GELU(),
            conv_group(WHITEN_CHANNELS, WIDTHS[0]), conv_group(WIDTHS[0], WIDTHS[1]), conv_group(WIDTHS[1], WIDTHS[2]),
            nn.MaxPool2d(3), nn.Flatten(),
            nn.Linear(WIDTHS[2], 10, bias=False), Scale(1 / 9),
        )

    def on_fit_start(self) -> None:
        data = self.trainer.datamodule
        fresh = self.trainer.ckpt_path is None
        if fresh and getattr(data, "train_images", None) is not None and hasattr(data, "normalize_images"):
            images = data.normalize_images(data.train_images[:WHITEN_IMAGES].to(self.device))
            whiten_(self.net[0], images)
