"""CNN with batch norm: three two-conv blocks, BN after the first conv of each, a three-layer head.

As the CIFAR-10 tutorial it comes from gives it: blocks 32-64, 128-128, 256-256 with BN after the first conv of each,
Dropout2d 0.05; linear 4096-1024-512-10 with dropout 0.1; 85.1% after 50 epochs (Adam, crop-flip,
dataset normalisation). Inferred, as in the widely copied PyTorch version of this net: 3x3 padding-1
convs, each block conv-BN-ReLU, conv-ReLU, max-pool 2 (32 -> 16 -> 8 -> 4, so 256 x 4 x 4 = 4096);
Dropout2d after the second block only; dropout 0.1 before the first and the last linear, ReLU between.
"""

from torch import nn

from cifar10.models.base import ClassifierModule
from cifar10.models.registry import register
from cifar10.recipes import Recipe, ours


def block(c_in: int, c_mid: int, c_out: int) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_mid, 3, padding=1), nn.BatchNorm2d(c_mid), nn.ReLU(inplace=True),
        nn.Conv2d(c_mid, c_out, 3, padding=1), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    ]


@register("cnn-bn", order=70,
          published="85.1% after 50 epochs (Adam, crop-flip, dataset normalisation)",
          # lr, batch unstated
          tutorial=Recipe(optimizer="adam", lr=1e-3, weight_decay=0.0, batch_size=128, max_epochs=50),
          default=ours(lr=0.05, label_smoothing=0.1, max_epochs=30))
class CNNBatchNorm(ClassifierModule):
    def build_net(self) -> nn.Module:
        return nn.Sequential(
            *block(3, 32, 64),
            *block(64, 128, 128), nn.Dropout2d(0.05),
            *block(128, 256, 256),
            nn.Flatten(),
            nn.Dropout(0.1), nn.Linear(256 * 4 * 4, 1024), nn.ReLU(inplace=True),
            nn.Linear(1024, 512), nn.ReLU(inplace=True),
            nn.Dropout(0.1), nn.Linear(512, 10),
        )
