"""Multilayer perceptron baseline.

As a CIFAR-10 tutorial gives it (its title not found: searches for these layers and figures found no
page): flatten, 3072-512-512-10 with ReLU, 55.4% test accuracy after 100 epochs (SGD lr 0.1, weight decay
1e-4, batch 256, no augmentation). No inferred details.
"""

from torch import nn

from cifar10.models.base import ClassifierModule
from cifar10.models.registry import register
from cifar10.recipes import Recipe, ours


@register("mlp", order=10,
          published="55.4% after 100 epochs (SGD lr 0.1, wd 1e-4, batch 256, no augmentation)",
          tutorial=Recipe(lr=0.1, momentum=0.0, weight_decay=1e-4, max_epochs=100, augment="none"),
          default=ours(lr=0.02, augment="flip", max_epochs=40))
class MLP(ClassifierModule):
    def build_net(self) -> nn.Module:
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(3 * 32 * 32, 512), nn.ReLU(inplace=True),
            nn.Linear(512, 512), nn.ReLU(inplace=True),
            nn.Linear(512, 10),
        )
