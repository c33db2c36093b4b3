"""Building blocks that more than one architecture uses."""

from torch import nn


def conv_relu_pool(c_in: int, c_out: int) -> nn.Sequential:
    """A 3x3 padding-1 conv, ReLU, then a 2x2 max-pool (halves the size): lenet's and tutorial-cnn's block."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2))
