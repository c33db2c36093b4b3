"""`python -m cifar10.export`: a checkpoint as a self-contained ONNX or TorchScript model."""

import argparse
import json
import sys
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from cifar10.checkpoint import Meta, load_checkpoint
from cifar10.errors import CliParser, UserError, exits_cleanly
from cifar10.files import output_file, replaced_atomically
from cifar10.models.base import ClassifierModule

SUFFIXES = {"onnx": ".onnx", "torchscript": ".ts"}


class ExportedClassifier(nn.Module):
    """float32 images in [0, 1], (N,3,32,32) -> logits (N,classes): the model's own normalisation and network,
    without the Lightning module around them."""

    def __init__(self, model: ClassifierModule) -> None:
        super().__init__()
        self.normalize, self.net = model.normalize, model.net

    def forward(self, images: Tensor) -> Tensor:
        return self.net(self.normalize(images))


def build_parser() -> argparse.ArgumentParser:
    parser = CliParser(
        prog="python -m cifar10.export",
        description="Export a checkpoint to ONNX or TorchScript. The exported model takes float32 RGB images "
        "with values in [0, 1], shape (N, 3, 32, 32), and returns logits (N, 10): the checkpoint's "
        "normalisation is built in, so no preprocessing beyond scaling pixels to [0, 1] is needed. "
        "The class names are stored in the file (ONNX metadata 'class_names'; TorchScript extra file "
        "'class_names.json').")
    parser.add_argument("--ckpt", required=True, metavar="PATH", help="checkpoint written by `python -m cifar10.fit`")
    parser.add_argument("--format", required=True, choices=tuple(SUFFIXES), help="onnx or torchscript")
    parser.add_argument("--out", metavar="FILE",
                        help="output file (default: model.onnx / model.ts beside the checkpoint)")
    return parser


def export_torchscript(module: nn.Module, meta: Meta, out: Path) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated, yet users ask for it
        traced = torch.jit.trace(module, torch.rand(2, 3, 32, 32))
        torch.jit.save(traced, str(out), _extra_files={"class_names.json": json.dumps(meta.class_names)})


def export_onnx(module: nn.Module, meta: Meta, out: Path) -> None:
    try:
        import onnx
    except ImportError:
        raise UserError("ONNX export needs the onnx package: pip install 'cifar10[export]' "
                        "(or export --format torchscript).") from None

    # The TorchScript-based exporter: one self-contained file, and quicker than the dynamo one.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, (torch.rand(2, 3, 32, 32),), str(out), dynamo=False,
                          input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    proto = onnx.load(str(out))
    onnx.helper.set_model_props(proto, {"class_names": json.dumps(meta.class_names), "model": meta.model})
    onnx.save(proto, str(out))


def export(ckpt: str | Path, fmt: str, out: str | Path | None = None) -> Path:
    """Write the checkpoint's model in `fmt` ('onnx' or 'torchscript'); returns the file written."""
    model, meta = load_checkpoint(ckpt)
    out = output_file(out if out else Path(ckpt).parent / f"model{SUFFIXES[fmt]}", "--out", f"model{SUFFIXES[fmt]}")
    with replaced_atomically(out) as partial:
        (export_onnx if fmt == "onnx" else export_torchscript)(ExportedClassifier(model).eval(), meta, partial)
    return out


@exits_cleanly
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = export(args.ckpt, args.format, args.out)
    print(f"wrote {out} ({args.format}): input float32 images in [0, 1] of shape (N, 3, 32, 32), "
          "output logits; normalisation included")
    return 0


if __name__ == "__main__":
    sys.exit(main())
