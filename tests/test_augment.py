"""Batched augmentation: every preset keeps uint8 shape, draws per image, is seeded, and does what it says."""

import math

import pytest
import torch
import torch.nn.functional as F

from cifar10.data.augment import AUGMENT_PRESETS, GRAY, augment, color_jitter, random_geometry, warp
from cifar10.errors import UserError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_images(n: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen(seed))


def coordinate_images(n: int) -> torch.Tensor:
    """Channel 0 holds 100 + row, channel 1 holds 100 + column: every pixel says where it came from."""
    rows = torch.arange(32).view(32, 1).expand(32, 32)
    image = torch.stack([100 + rows, 100 + rows.T, torch.full((32, 32), 200)]).to(torch.uint8)
    return image.expand(n, 3, 32, 32).contiguous()


@pytest.mark.parametrize("preset", AUGMENT_PRESETS)
def test_every_preset_keeps_shape_dtype_and_is_reproducible(preset):
    images = random_images()
    out = augment(images, preset, gen(1))
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert torch.equal(out, augment(images, preset, gen(1)))
    if preset != "none":
        assert not torch.equal(out, augment(images, preset, gen(2)))


@pytest.mark.parametrize("preset", [p for p in AUGMENT_PRESETS if p != "none"])
def test_each_image_gets_its_own_parameters(preset):
    out = augment(coordinate_images(32), preset, gen(0))
    distinct = {tuple(image.flatten().tolist()) for image in out}
    assert len(distinct) >= (2 if preset == "flip" else 16)


@pytest.mark.parametrize("preset", ["flip", "crop-flip", "flip-rotate"])
def test_geometric_presets_only_move_pixels_or_fill_zeros(preset):
    images = coordinate_images(16)
    allowed = set(images.unique().tolist()) | {0}
    assert set(augment(images, preset, gen(0)).unique().tolist()) <= allowed


def test_flip_mirrors_each_image_or_leaves_it():
    images = random_images(64)
    out = augment(images, "flip", gen(3))
    flipped = torch.tensor([torch.equal(o, torch.flip(x, dims=[2])) for o, x in zip(out, images)])
    kept = torch.tensor([torch.equal(o, x) for o, x in zip(out, images)])
    assert bool((flipped ^ kept).all()) and 16 < int(flipped.sum()) < 48


def test_crop_flip_is_a_padded_crop_with_optional_flip():
    images = random_images(24)
    out = augment(images, "crop-flip", gen(4))
    padded = F.pad(images, (4, 4, 4, 4))
    found = []
    for o, p in zip(out, padded):
        matches = [(dy, dx, flip) for dy in range(9) for dx in range(9) for flip in (False, True)
                   if torch.equal(o, (p.flip(-1) if flip else p)[:, dy:dy + 32, dx:dx + 32])]
        assert matches, "output is not a crop of the zero-padded image"
        found.append(matches[0])
    assert len({(dy, dx) for dy, dx, _ in found}) > 12 and len({flip for *_, flip in found}) == 2


@pytest.mark.parametrize("epoch", [0, 1, 2])
def test_shift_altflip_shifts_with_reflect_padding_and_mirrors_all_on_odd_epochs(epoch):
    images = random_images(32)
    out = augment(images, "shift-altflip", gen(5), epoch=epoch)
    padded = F.pad(images.float(), (2, 2, 2, 2), mode="reflect").to(torch.uint8)
    shifts = []
    for o, p in zip(out, padded):
        windows = {flip: [(dy, dx) for dy in range(5) for dx in range(5)
                          if torch.equal(o, (p.flip(-1) if flip else p)[:, dy:dy + 32, dx:dx + 32])]
                   for flip in (False, True)}
        assert windows[epoch % 2 == 1] and not windows[epoch % 2 == 0]
        shifts += windows[epoch % 2 == 1][:1]
    assert len(set(shifts)) > 10


def fitted_maps(out: torch.Tensor) -> list[torch.Tensor]:
    """Least-squares 2x2 map (column, row) of output pixels -> the source pixel they show, per image."""
    maps = []
    centre = 15.5
    for image in out:
        rows, cols = (image[1] > 0).nonzero(as_tuple=True)
        src = torch.stack([image[1, rows, cols], image[0, rows, cols]], 1).double() - 100 - centre
        dst = torch.stack([cols, rows], 1).double() - centre
        solution = torch.linalg.lstsq(dst, src).solution  # src = dst @ solution
        assert (dst @ solution - src).abs().mean() < 0.6  # nearest sampling of an affine map
        maps.append(solution.T)
    return maps


def test_flip_rotate_rotates_up_to_ten_degrees_and_flips():
    maps = fitted_maps(augment(coordinate_images(48), "flip-rotate", gen(5)))
    angles = torch.tensor([math.degrees(math.atan2(-m[1, 0], m[1, 1])) for m in maps])
    dets = torch.tensor([float(torch.linalg.det(m)) for m in maps])
    assert angles.abs().max() <= 10.5 and angles.std() > 3
    assert torch.allclose(dets.abs(), torch.ones_like(dets), atol=0.05)
    assert (dets > 0).any() and (dets < 0).any()


def test_heavy_geometry_scales_shears_and_rotates_per_image():
    theta = random_geometry(48, gen(6), degrees=10, shear=10, scale=(0.8, 1.2))
    maps = fitted_maps(warp(coordinate_images(48), theta).to(torch.uint8))
    zooms = torch.tensor([1 / math.sqrt(abs(float(torch.linalg.det(m)))) for m in maps])
    assert zooms.min() > 0.78 and zooms.max() < 1.22 and zooms.std() > 0.05
    for m, t in zip(maps, theta):
        torch.testing.assert_close(m, t[:, :2].double(), atol=0.03, rtol=0)


def test_colour_jitter_is_brightness_contrast_saturation_in_range():
    x = random_images(16).float()
    g = gen(7)
    draws = torch.Generator().set_state(g.get_state())
    out = color_jitter(x.clone(), g, strength=0.2)
    b, c, s = (torch.rand(16, generator=draws) * 0.4 + 0.8 for _ in "bcs")
    gray = lambda y: torch.einsum("c,nchw->nhw", torch.tensor(GRAY), y).unsqueeze(1)  # noqa: E731
    y = x * b.view(-1, 1, 1, 1)
    y = c.view(-1, 1, 1, 1) * y + (1 - c.view(-1, 1, 1, 1)) * gray(y).mean((2, 3), keepdim=True)
    y = s.view(-1, 1, 1, 1) * y + (1 - s.view(-1, 1, 1, 1)) * gray(y)
    torch.testing.assert_close(out, y, atol=1e-3, rtol=1e-4)


def test_heavy_keeps_the_value_range_and_brightness_bounds():
    images = torch.full((64, 3, 32, 32), 100, dtype=torch.uint8)
    out = augment(images, "heavy", gen(8)).float()
    centre = out[:, :, 12:20, 12:20]  # never reached by the zero fill
    assert centre.min() >= 80 - 1 and centre.max() <= 120 + 1 and centre.std() > 5


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(UserError, match="none, flip, crop-flip, shift-altflip, flip-rotate, heavy"):
        augment(random_images(2), "mixup", gen())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("preset", AUGMENT_PRESETS)
def test_presets_run_on_the_gpu_with_a_gpu_generator(preset):
    images = random_images().cuda()
    out = augment(images, preset, torch.Generator("cuda").manual_seed(0))
    assert out.device == images.device and out.dtype == torch.uint8 and out.shape == images.shape
    assert torch.equal(out, augment(images, preset, torch.Generator("cuda").manual_seed(0)))


class HostCopies:
    """Counts calls that copy host data to a device: torch.tensor / as_tensor / from_numpy, and Tensor.to
    or Tensor.cuda with a device named (dtype-only .to calls stay on their device)."""

    def __init__(self, monkeypatch) -> None:
        self.calls: list[str] = []
        for owner, name, always in ((torch, "tensor", True), (torch, "as_tensor", True), (torch, "from_numpy", True),
                                    (torch.Tensor, "to", False), (torch.Tensor, "cuda", True)):
            monkeypatch.setattr(owner, name, self.counted(getattr(owner, name), name, always))

    def counted(self, function, name: str, always: bool):
        def wrapper(*args, **kwargs):
            named_device = "device" in kwargs or any(isinstance(a, (str, torch.device)) for a in args[1:])
            if always or named_device:
                self.calls.append(name)
            return function(*args, **kwargs)
        return wrapper


@pytest.mark.parametrize("preset", AUGMENT_PRESETS)
def test_augmentation_after_transfer_copies_nothing_from_the_host(preset, tiny_archive, tmp_path, monkeypatch):
    """On a GPU each such copy is a blocking host-to-device transfer per step."""
    import lightning as L

    from cifar10.data import CIFAR10DataModule

    dm = CIFAR10DataModule.from_keywords(data_dir=tmp_path, url=tiny_archive.url, md5=tiny_archive.md5, batch_size=16,
                           val_size=50, augment=preset)
    dm.prepare_data()
    dm.setup("fit")
    dm.trainer = L.Trainer(accelerator="cpu", logger=False)  # the epoch and rank that seed the augmentation
    batch = next(iter(dm.train_dataloader()))
    copies = HostCopies(monkeypatch)
    images, labels = dm.on_after_batch_transfer(batch, 0)
    assert images.shape == (16, 3, 32, 32) and images.dtype == torch.uint8
    assert copies.calls == [], copies.calls
