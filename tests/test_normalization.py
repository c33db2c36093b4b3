"""Normalisation: the channel statistics and the (x/255 - mean)/std a model applies to its pixels."""

import pytest
import torch

from cifar10.data.normalization import channel_stats, normalize


def random_images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_channel_stats_match_a_direct_float_computation():
    images = random_images(300)
    mean, std = channel_stats(images, chunk=64)
    pixels = images.double() / 255
    assert mean == pytest.approx(pixels.mean((0, 2, 3)).tolist(), abs=1e-7)
    assert std == pytest.approx(pixels.std((0, 2, 3), correction=0).tolist(), abs=1e-7)


def test_normalize_formula():
    images = random_images(4)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    expected = (images.double() / 255 - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    out = normalize(images, mean, std)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected.float())
