"""The CNN of the classic PyTorch CIFAR-10 course exercise (Udacity deep-learning-v2-pytorch).

As that exercise gives it: convs of 16, 32, 64 channels each followed by a 2x2 max-pool, dropout 0.25,
linear 1024-500-10; 72% after 20 epochs (SGD lr 0.01, batch 20, flip-rotate, 20% validation split).
Inferred as in that exercise: 3x3 padding-1 convs with ReLU (32 -> 16 -> 8 -> 4, so 64 x 4 x 4 = 1024),
dropout 0.25 before each linear and ReLU after the first.
"""

from torch import nn

from cifar10.models.base import ClassifierModule
from cifar10.models.layers import conv_relu_pool
from cifar10.models.registry import register
from cifar10.recipes import Recipe, ours


@register("tutorial-cnn", order=50,
          published="72% after 20 epochs (SGD lr 0.01, batch 20, flip-rotate, 20% validation split)",
          tutorial=Recipe(lr=0.01, momentum=0.0, weight_decay=0.0, batch_size=20, max_epochs=20,
                          augment="flip-rotate", normalize="half", val_size=0.2),  # momentum, wd unstated
          default=ours(lr=0.05, batch_size=128, max_epochs=15))
class TutorialCNN(ClassifierModule):
    def build_net(self) -> nn.Module:
        return nn.Sequential(
            conv_relu_pool(3, 16), conv_relu_pool(16, 32), conv_relu_pool(32, 64),
            nn.Flatten(),
            nn.Dropout(0.25), nn.Linear(64 * 4 * 4, 500), nn.ReLU(inplace=True),
            nn.Dropout(0.25), nn.Linear(500, 10),
        )
