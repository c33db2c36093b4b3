"""`python -m cifar10.predict`: classify image files with a trained checkpoint."""

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from cifar10 import reporting
from cifar10.checkpoint import Meta, load_checkpoint
from cifar10.errors import CliParser, UserError, exits_cleanly

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
BATCH = 256


@dataclass
class Prediction:
    file: str
    top: list[tuple[str, float]] | None = None  # (class, probability), best first
    error: str | None = None

    def as_json(self) -> dict:
        if self.error is not None:
            return {"file": self.file, "error": self.error}
        return {"file": self.file, "top": [{"class": c, "prob": p} for c, p in self.top]}


def build_parser() -> argparse.ArgumentParser:
    parser = CliParser(prog="python -m cifar10.predict",
                       description="Classify images with a checkpoint written by `python -m cifar10.fit`. Any "
                       "image Pillow reads is converted to RGB (transparency over white), resized to 32x32 "
                       "and normalised as the model was trained.",
                       epilog="Exit code 1 when some file could not be read (the others are still predicted).")
    parser.add_argument("--ckpt", required=True, metavar="PATH", help="checkpoint (.ckpt) to predict with")
    parser.add_argument("--top-k", type=int, default=3, metavar="K", help="classes shown per image (default 3)")
    parser.add_argument("--json", action="store_true",
                        help='print one JSON list of {"file", "top": [{"class", "prob"}]} or {"file", "error"}')
    parser.add_argument("paths", nargs="+", metavar="FILE_OR_DIR",
                        help="images, or folders searched recursively for image files")
    return parser


def expand_paths(paths: Sequence[str]) -> Iterator[Path]:
    """Files as given; folders as their image files, sorted, recursively. Missing paths pass through
    (reading them reports the error)."""
    for path in map(Path, paths):
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        else:
            yield path


def eight_bit_gray(image: Image.Image) -> Image.Image:
    """A 16-bit or float grey image ('I;16*', 'I', 'F') as 8-bit 'L', 32x32: its range scaled, not clipped.

    Pillow's convert clips these modes at 255 (Image.convert docs), which turns most 16-bit pictures white.
    Integer modes are taken as 16-bit (0..65535, as PNG and TIFF store them), floats as 0..1 when none
    is above 1, else as 0..255; resized first, in 32-bit float, so a huge image costs no float copy of itself.
    """
    top = 65535.0 if image.mode != "F" else 1.0 if image.getextrema()[1] <= 1.0 else 255.0
    small = image.convert("F").resize((32, 32), Image.Resampling.BILINEAR)
    values = np.asarray(small, dtype=np.float32) * (255.0 / top)
    return Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8), "L")


def read_image(path: Path) -> torch.Tensor:
    """uint8 (3,32,32) RGB, upright as EXIF says; transparency is composited over white; 16-bit and float
    grey images scaled to 8 bits."""
    with Image.open(path) as opened:
        image = ImageOps.exif_transpose(opened)
        if image.mode in ("I", "F") or image.mode.startswith("I;16"):
            image = eight_bit_gray(image)
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
        image = image.convert("RGB").resize((32, 32), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


def load_images(files: list[Path]) -> tuple[list[torch.Tensor | None], list[str | None]]:
    """Per file, the image or None, and None or why it could not be read."""
    images, errors = [], []
    for file in files:
        if file.exists() and not file.is_file():  # a FIFO, device or socket would block or stream forever
            images.append(None)
            errors.append("not a regular file (a folder, FIFO, device or socket): pass image files")
            continue
        try:
            images.append(read_image(file))
            errors.append(None)
        except FileNotFoundError:
            images.append(None)
            errors.append("no such file")
        except Exception as err:  # Pillow raises many types for broken or unsupported files
            images.append(None)
            errors.append(f"cannot read image: {err}")
    return images, errors


@torch.no_grad()
def top_k(model: torch.nn.Module, meta: Meta, images: torch.Tensor, k: int) -> list[list[tuple[str, float]]]:
    probs = torch.softmax(model(images), dim=1)  # uint8 images: the model normalises them
    values, indices = probs.topk(k, dim=1)
    return [[(meta.class_names[i], round(float(p), 6)) for p, i in zip(vs, ix)]
            for vs, ix in zip(values.tolist(), indices.tolist())]


def predict_files(model: torch.nn.Module, meta: Meta, files: list[Path], k: int) -> list[Prediction]:
    """Top-k predictions per file, in the given order; unreadable files get an error instead."""
    results = []
    for start in range(0, len(files), BATCH):
        chunk = files[start:start + BATCH]
        images, errors = load_images(chunk)
        readable = [img for img in images if img is not None]
        tops = iter(top_k(model, meta, torch.stack(readable), k) if readable else [])
        results += [Prediction(str(f), error=e) if e else Prediction(str(f), top=next(tops))
                    for f, e in zip(chunk, errors)]
    return results


def print_text(results: list[Prediction]) -> None:
    rows = []
    for r in results:
        if r.error is not None:
            print(f"error: {r.file}: {r.error}", file=sys.stderr)
            continue
        rows += [[r.file if rank == 0 else "", c, f"{p:.2%}"] for rank, (c, p) in enumerate(r.top)]
    if rows:
        print(reporting.format_table(["file", "class", "probability"], rows))


@exits_cleanly
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    model, meta = load_checkpoint(args.ckpt)
    if not 1 <= args.top_k <= len(meta.class_names):
        raise UserError(f"--top-k {args.top_k} is out of range: pass 1 to {len(meta.class_names)}.")
    files = list(expand_paths(args.paths))
    if not files:
        raise UserError(f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {', '.join(args.paths)}.")
    results = predict_files(model, meta, files, args.top_k)
    if args.json:
        print(json.dumps([r.as_json() for r in results], indent=2))
    else:
        print_text(results)
    return 1 if any(r.error is not None for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
