"""Train, compare and understand CIFAR-10 image classifiers with PyTorch Lightning."""

__version__ = "0.1.0"
