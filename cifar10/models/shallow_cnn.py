"""Shallow CNN: three 3x3 convs and one max-pool in front of a single linear layer.

As a CIFAR-10 tutorial gives it (its title not found: searches for these layers and figures found no
page): conv 3-32-64-128 (3x3, padding 1, ReLU), max-pool 2, linear 32768-10; 67.9% with no augmentation,
76.4% with crop-flip and momentum 0.9 (100 epochs, SGD lr 0.1, wd 1e-4, batch 256).
Inferred: the single pool comes after the last conv, so 128 x 16 x 16 = 32768 features.
"""

from torch import nn

from cifar10.models.base import ClassifierModule
from cifar10.models.registry import register
from cifar10.recipes import Recipe, ours


@register("shallow-cnn", order=20,
          published="67.9% with no augmentation, 76.4% with crop-flip and momentum 0.9 "
                    "(100 epochs, SGD lr 0.1, wd 1e-4, batch 256)",
          # 67.9% variant (no augmentation, plain SGD); the 76.4% variant adds crop-flip and momentum 0.9
          tutorial=Recipe(lr=0.1, momentum=0.0, weight_decay=1e-4, max_epochs=100, augment="none"),
          default=ours(lr=0.05, label_smoothing=0.1, max_epochs=30))
class ShallowCNN(ClassifierModule):
    def build_net(self) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(128 * 16 * 16, 10),
        )
