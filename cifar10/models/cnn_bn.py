"""CNN with batch norm: three two-conv blocks, BN after the first conv of each, a three-layer head.

From Zhenye Na's solution to "HW3: Train a deep convolution network on a GPU with PyTorch for the CIFAR10
dataset" (IE 534 Deep Learning, University of Illinois), as it gives it: 3x3 padding-1 convs in
blocks 32-64, 128-128, 256-256, each block conv-BN-ReLU, conv-ReLU, max-pool 2 (32 -> 16 -> 8 -> 4, so
256 x 4 x 4 = 4096); Dropout2d 0.05 after the second block; dropout 0.1 before the first and the last of
the linears 4096-1024-512-10, ReLU between; 85.1% after 50 epochs (Adam lr 1e-3, weight decay 5e-4,
batch 128, crop-flip, dataset normalisation). Its convolutional trunk is the network of "Image
Classification using Convolutional Neural Networks in PyTorch" (Aakash N S, Jovian's "Deep Learning
with PyTorch: Zero to GANs", lesson 5) with BatchNorm and dropout added.
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
          published="85.1% after 50 epochs (Adam 1e-3, wd 5e-4, batch 128, crop-flip, dataset normalisation)",
          tutorial=Recipe(optimizer="adam", lr=1e-3, weight_decay=5e-4, batch_size=128, max_epochs=50),
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
