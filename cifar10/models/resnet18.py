"""ResNet-18 adapted to 32x32 inputs, as in the well-known kuangliu/pytorch-cifar version (93-95%).

He et al.'s ResNet-18 (BasicBlock, [2, 2, 2, 2], widths 64-128-256-512) with the ImageNet stem
(7x7 stride-2 conv and max-pool) replaced by a 3x3 stride-1 conv, so the stages see 32, 16, 8, 4
pixels; global average pool and linear 512-10. Projection shortcuts (1x1 conv + BN) where the shape
changes. 11,173,962 parameters.
"""

from torch import Tensor, nn

from cifar10.models.base import ClassifierModule
from cifar10.models.registry import register
from cifar10.recipes import Recipe, ours


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(c_out))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus the input (projected when stride or width change), then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(conv_bn(c_in, c_out, 3, stride), nn.ReLU(inplace=True),
                                      conv_bn(c_out, c_out, 3, 1))
        self.shortcut = conv_bn(c_in, c_out, 1, stride) if stride != 1 or c_in != c_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return (self.residual(x) + self.shortcut(x)).relu()


def stage(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1))


@register("resnet18", order=80,
          published="93-95%, the usual strong baseline (kuangliu/pytorch-cifar: SGD 0.1, "
                    "momentum 0.9, wd 5e-4, cosine, 200 epochs)",
          # kuangliu/pytorch-cifar: SGD 0.1, momentum 0.9, wd 5e-4, cosine over 200 epochs, batch 128
          tutorial=Recipe(lr=0.1, schedule="cosine", batch_size=128, max_epochs=200),
          default=ours(lr=0.1, label_smoothing=0.1, max_epochs=30))
class ResNet18(ClassifierModule):
    def build_net(self) -> nn.Module:
        return nn.Sequential(
            conv_bn(3, 64, 3, 1), nn.ReLU(inplace=True),
            stage(64, 64, 1), stage(64, 128, 2), stage(128, 256, 2), stage(256, 512, 2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(512, 10),
        )
