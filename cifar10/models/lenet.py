"""LeNet-style CNN as published with 75.8% after 30 epochs (Adam 1e-3, batch 100, heavy augmentation).

Layers and training as in Vikas Bhadoria's Kaggle notebook "CIFAR10 high accuracy model build on PyTorch":
three 3x3 pad-1 convs (16, 32, 64 channels), each followed by ReLU and a 2x2 max-pool (32 -> 16 -> 8 -> 4,
so 64 x 4 x 4 = 1024 features), linear 1024-500 with ReLU, dropout 0.5, linear 500-10; Adam 1e-3, batch 100,
flip, rotation, shear-scale and colour-jitter augmentation. We have not found the 75.8% after 30 epochs in
the copies of it we could read.
"""

from torch import nn

from cifar10.models.base import ClassifierModule
from cifar10.models.layers import conv_relu_pool
from cifar10.models.registry import register
from cifar10.recipes import Recipe, ours


@register("lenet", order=40,
          published="75.8% after 30 epochs (Adam 1e-3, batch 100, heavy augmentation)",
          tutorial=Recipe(optimizer="adam", lr=1e-3, weight_decay=0.0, batch_size=100, augment="heavy",
                          normalize="half"),  # normalization unstated
          default=ours(optimizer="adamw", lr=2e-3, weight_decay=0.05, batch_size=128, max_epochs=25))
class LeNet(ClassifierModule):
    def build_net(self) -> nn.Module:
        return nn.Sequential(
            conv_relu_pool(3, 16), conv_relu_pool(16, 32), conv_relu_pool(32, 64),
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, 500), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(500, 10),
        )
