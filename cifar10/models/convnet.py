"""ConvNet: five convs (8, 32, 64, 128, 256 channels), two max-pools, Dropout2d 0.5 twice, a four-layer head.

From Vinay P Naidu's notebook "CIFAR-10 Image Classification" (github.com/Vinaypnaidu/CIFAR-10, after
Vishal R's cifar10-pytorch tutorial): 3x3 padding-1 convs with ReLU, a 2x2 max-pool after the second and the
fourth conv (32 -> 16 -> 8, so 256 x 8 x 8 = 16384 features), one Dropout2d(0.5) used after the third and
after the fifth conv, linear 16384-256-128-64-10 with ReLU between; 67.98% best test accuracy (Adam 3e-4,
betas (0.9, 0.995), wd 5e-4, batch 1024, pixels scaled to [0, 1], no augmentation, 21,000 random batches,
about 430 epochs, the best of 210 evaluations on the test split).
Ours: He (Kaiming) initialisation. With PyTorch's default init the logits of this nine-layer net without
normalisation hardly depend on the input (std across images ~2e-4 versus ~0.5), and its first epochs barely learn.
"""

from torch import nn

from cifar10.models.base import ClassifierModule
from cifar10.models.registry import register
from cifar10.recipes import Recipe, ours


def conv_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True)]


@register("convnet", order=60,
          published="68.0% best test accuracy in ~430 epochs (Adam 3e-4, betas (0.9, 0.995), wd 5e-4, batch 1024, "
                    "no augmentation)",
          tutorial=Recipe(optimizer="adam", lr=3e-4, betas=(0.9, 0.995), weight_decay=5e-4, batch_size=1024,
                          augment="none", normalize="none",
                          max_epochs=50),  # ours: the source's ~430 epochs take ~8 h on a 2-core CPU
          default=ours(optimizer="adamw", lr=1e-3, weight_decay=0.05, max_epochs=20))
class ConvNet(ClassifierModule):
    def build_net(self) -> nn.Module:
        net = nn.Sequential(
            *conv_relu(3, 8), *conv_relu(8, 32), nn.MaxPool2d(2),
            *conv_relu(32, 64), nn.Dropout2d(0.5), *conv_relu(64, 128), nn.MaxPool2d(2),
            *conv_relu(128, 256), nn.Dropout2d(0.5),
            nn.Flatten(),
            nn.Linear(256 * 8 * 8, 256), nn.ReLU(inplace=True),
            nn.Linear(256, 128), nn.ReLU(inplace=True),
            nn.Linear(128, 64), nn.ReLU(inplace=True),
            nn.Linear(64, 10),
        )
        for layer in net:
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                nn.init.zeros_(layer.bias)
        return net
