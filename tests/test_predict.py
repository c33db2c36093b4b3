"""`python -m cifar10.predict`: any image Pillow reads, broken files reported one by one, exit codes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers_ckpt import read_test_split, tiny_run  # noqa: F401 (tiny_run is a fixture)
from PIL import Image

from cifar10.checkpoint import load_checkpoint
from cifar10.predict import main, read_image

rng = np.random.default_rng(0)


def noise(h: int, w: int, channels: int = 3) -> np.ndarray:
    return rng.integers(0, 256, size=(h, w, channels) if channels > 1 else (h, w), dtype=np.uint8)


@pytest.fixture
def images(tmp_path):
    """One image of each kind the issue names, by kind."""
    paths = {"jpeg": tmp_path / "photo.jpg", "png": tmp_path / "plain.png", "rgba": tmp_path / "alpha.png",
             "grey": tmp_path / "grey.png", "large": tmp_path / "large.jpeg"}
    Image.fromarray(noise(48, 64)).save(paths["jpeg"], quality=90)
    Image.fromarray(noise(32, 32)).save(paths["png"])
    Image.fromarray(noise(40, 40, 4), "RGBA").save(paths["rgba"])
    Image.fromarray(noise(20, 30, 1), "L").save(paths["grey"])
    Image.fromarray(noise(1200, 1600)).save(paths["large"], quality=70)
    return paths


@pytest.fixture
def broken(tmp_path, images):
    paths = {"text": tmp_path / "notes.jpg", "truncated": tmp_path / "cut.jpg", "empty": tmp_path / "empty.png"}
    paths["text"].write_text("this is not an image\n")
    paths["truncated"].write_bytes(images["large"].read_bytes()[:3000])
    paths["empty"].write_bytes(b"")
    return paths


def predict_json(capsys, *argv: str) -> tuple[int, list[dict]]:
    code = main(["--json", *argv])
    return code, json.loads(capsys.readouterr().out)


def test_every_kind_of_image_gets_top_k(tiny_run, images, capsys):
    code, results = predict_json(capsys, "--ckpt", str(tiny_run.ckpt), "--top-k", "4", *map(str, images.values()))
    assert code == 0
    assert [r["file"] for r in results] == [str(p) for p in images.values()]
    _, meta = load_checkpoint(tiny_run.ckpt)
    for r in results:
        assert set(r) == {"file", "top"} and len(r["top"]) == 4
        assert all(set(t) == {"class", "prob"} and t["class"] in meta.class_names for t in r["top"])
        probs = [t["prob"] for t in r["top"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6


def test_predictions_use_the_checkpoint_normalisation(tiny_run, tiny_archive, tmp_path, capsys):
    test_images, _ = read_test_split(tiny_archive, tiny_run)
    files = []
    for i in range(5):  # lossless 32x32 PNGs: the pixels reach the model unchanged
        files.append(tmp_path / f"test_{i}.png")
        Image.fromarray(test_images[i].permute(1, 2, 0).numpy()).save(files[-1])
    model, meta = load_checkpoint(tiny_run.ckpt)
    with torch.no_grad():
        expected = torch.softmax(model(test_images[:5]), dim=1).max(dim=1)
    _, results = predict_json(capsys, "--ckpt", str(tiny_run.ckpt), "--top-k", "1", *map(str, files))
    assert [r["top"][0]["class"] for r in results] == [meta.class_names[i] for i in expected.indices]
    assert [r["top"][0]["prob"] for r in results] == pytest.approx(expected.values.tolist(), abs=1e-5)


def test_images_become_rgb_32x32_with_alpha_over_white(images, tmp_path):
    for path in images.values():
        image = read_image(path)
        assert image.shape == (3, 32, 32) and image.dtype == torch.uint8
    grey = read_image(images["grey"])
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    rgba = np.zeros((10, 10, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red, half of it opaque
    rgba[:5, :, 3] = 255
    Image.fromarray(rgba, "RGBA").resize((32, 32), Image.Resampling.NEAREST).save(tmp_path / "half.png")
    composited = read_image(tmp_path / "half.png")
    assert composited[:, :8].tolist() == torch.tensor([255, 0, 0]).view(3, 1, 1).expand(3, 8, 32).tolist()
    assert (composited[:, 24:] == 255).all()  # transparent part -> white


def test_broken_files_get_their_own_errors_and_exit_1(tiny_run, images, broken, tmp_path, capsys):
    missing = tmp_path / "missing.png"
    argv = [str(images["jpeg"]), *map(str, broken.values()), str(missing), str(images["png"])]
    code, results = predict_json(capsys, "--ckpt", str(tiny_run.ckpt), *argv)
    assert code == 1
    assert [r["file"] for r in results] == argv
    assert "top" in results[0] and "top" in results[-1]
    assert all(set(r) == {"file", "error"} and r["error"] for r in results[1:-1])
    assert results[-2]["error"] == "no such file"


def test_folders_are_walked_sorted_and_recursively(tiny_run, tmp_path, capsys):
    for name, fmt in [("b/z.png", "PNG"), ("b/a.JPG", "JPEG"), ("a.png", "PNG"), ("c/d/e.webp", "WEBP")]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(noise(8, 8)).save(tmp_path / name, format=fmt)
    (tmp_path / "notes.txt").write_text("skipped: not an image extension")
    code, results = predict_json(capsys, "--ckpt", str(tiny_run.ckpt), str(tmp_path))
    assert code == 0
    assert [r["file"] for r in results] == [str(tmp_path / n) for n in ["a.png", "b/a.JPG", "b/z.png", "c/d/e.webp"]]


def test_text_output_is_a_table_and_errors_go_to_stderr(tiny_run, images, broken, capsys):
    assert main(["--ckpt", str(tiny_run.ckpt), "--top-k", "2", str(images["png"]), str(broken["empty"])]) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split() == ["file", "class", "probability"]
    assert lines[2].startswith(str(images["png"])) and lines[2].endswith("%") and len(lines) == 4
    assert err.count("error:") == 1 and str(broken["empty"]) in err


@pytest.mark.parametrize("top_k", ["0", "11", "two"])
def test_bad_top_k_exits_2(tiny_run, images, top_k, capsys):
    assert main(["--ckpt", str(tiny_run.ckpt), "--top-k", top_k, str(images["png"])]) == 2
    assert "error:" in capsys.readouterr().err


def test_bad_checkpoint_exits_2(images, capsys):
    assert main(["--ckpt", str(images["png"]), str(images["png"])]) == 2
    assert "is not a checkpoint of this project" in capsys.readouterr().err


def test_command_line_exit_code_without_traceback(tiny_run, images, broken):
    result = subprocess.run([sys.executable, "-m", "cifar10.predict", "--ckpt", str(tiny_run.ckpt),
                             str(images["jpeg"]), str(broken["truncated"])],
                            capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"error: {broken['truncated']}" in result.stderr and str(images["jpeg"]) in result.stdout


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((32, 32, 3), dtype=np.uint8)
    pixels[:, 16:] = 255  # black left, white right; EXIF orientation 3 turns it by 180 degrees
    exif = Image.Exif()
    exif[0x0112] = 3
    Image.fromarray(pixels).save(tmp_path / "turned.png", exif=exif)
    image = read_image(tmp_path / "turned.png")
    assert (image[:, :, :16] == 255).all() and (image[:, :, 16:] == 0).all()


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_16_bit_and_float_images_are_scaled_to_8_bits_not_clipped(mode, tmp_path):
    """One gradient as 8-bit grey, and as 16-bit (PNG), 32-bit integer and float (TIFF): the same pixels, +-1."""
    ramp = np.tile(np.linspace(0, 1, 64), (48, 1))
    Image.fromarray(np.round(ramp * 255).astype(np.uint8), "L").save(tmp_path / "gray8.png")
    deep = {"I;16": (ramp * 65535).astype(np.uint16), "I": (ramp * 65535).astype(np.int32),
            "F": ramp.astype(np.float32)}[mode]
    path = tmp_path / ("deep.png" if mode == "I;16" else "deep.tif")
    Image.fromarray(deep).save(path)
    with Image.open(path) as opened:
        assert opened.mode == mode  # what the file holds reaches the reader
    eight, high = read_image(tmp_path / "gray8.png").int(), read_image(path).int()
    assert high.max() > 250 and (eight - high).abs().max() <= 1
