"""Deep CNN: three VGG-style blocks with batch norm and growing dropout, then a three-layer head.

As its tutorial publishes it: each block is (conv-ReLU-BN) x 2, max-pool 2, Dropout2d 0.2 / 0.3 / 0.4,
widths 32-64, 128-128, 256-256; linear 4096-1024-512-10; 91.2% after 100 epochs (SGD lr 0.1, momentum 0.9,
wd 1e-4, batch 256, crop-flip). The widths and the head are those of "Image Classification using
Convolutional Neural Networks in PyTorch" (Aakash N S, Jovian's "Deep Learning with PyTorch: Zero to
GANs", lesson 5); the blocks, with BN after each ReLU and dropout growing 0.2 / 0.3 / 0.4, follow Jason
Brownlee's "How to Develop a CNN From Scratch for CIFAR-10 Photo Classification" (Machine Learning
Mastery). Inferred: 3x3 padding-1 convs (32 -> 16 -> 8 -> 4, so 256 x 4 x 4 = 4096 features) and ReLU
between the linears, no dropout in the head.
"""

from torch import nn

from cifar10.models.base import ClassifierModule
from cifar10.models.registry import register
from cifar10.recipes import Recipe, ours


def conv_relu_bn(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True), nn.BatchNorm2d(c_out)]


def block(c_in: int, c_mid: int, c_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(*conv_relu_bn(c_in, c_mid), *conv_relu_bn(c_mid, c_out),
                         nn.MaxPool2d(2), nn.Dropout2d(dropout))


@register("deep-cnn", order=30,
          published="91.2% after 100 epochs (SGD lr 0.1, momentum 0.9, wd 1e-4, batch 256, crop-flip)",
          tutorial=Recipe(lr=0.1, momentum=0.9, weight_decay=1e-4, max_epochs=100),
          default=ours(lr=0.1, label_smoothing=0.1, max_epochs=40))
class DeepCNN(ClassifierModule):
    def build_net(self) -> nn.Module:
        return nn.Sequential(
            block(3, 32, 64, 0.2), block(64, 128, 128, 0.3), block(128, 256, 256, 0.4),
            nn.Flatten(),
            nn.Linear(256 * 4 * 4, 1024), nn.ReLU(inplace=True),
            nn.Linear(1024, 512), nn.ReLU(inplace=True),
            nn.Linear(512, 10),
        )
