"""`python -m cifar10.evaluate`: test a checkpoint and write a report (tables, figures, report.json)."""

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix
from tqdm import tqdm

from cifar10 import reporting
from cifar10.checkpoint import Meta, load_checkpoint
from cifar10.data import CIFAR10DataModule
from cifar10.errors import CliParser, UserError, exits_cleanly
from cifar10.files import atomic_write_text, writable_folder
from cifar10.models.base import MAX_MISCLASSIFIED, TTA_MODES, Misclassified, augmented_logits


@dataclass
class Evaluation:
    acc: float
    per_class_acc: dict[str, float]
    confusion: list[list[int]]  # rows: true class, columns: predicted class
    n_images: int
    wrong_images: Tensor  # uint8 (M,3,32,32), the first misclassified test images
    wrong_preds: Tensor
    wrong_targets: Tensor


def build_parser() -> argparse.ArgumentParser:
    parser = CliParser(prog="python -m cifar10.evaluate",
                       description="Test a checkpoint on the CIFAR-10 test set: print accuracy, accuracy per "
                       "class and the confusion matrix, and write confusion_matrix.png, per_class_accuracy.png, "
                       "misclassified.png, curves.png (from the run's TensorBoard logs) and report.json.")
    add = parser.add_argument
    add("--ckpt", required=True, metavar="PATH", help="checkpoint written by `python -m cifar10.fit`")
    add("--data-dir", default="data", metavar="DIR", help="where CIFAR-10 is (or gets) downloaded (default data)")
    add("--data-url", metavar="URL", help="archive URL, file:// works (default: the official one)")
    add("--data-md5", metavar="MD5", help="md5 of the archive at --data-url")
    add("--batch-size", type=int, default=500, metavar="N", help="test images per batch (default 500)")
    add("--accelerator", choices=("auto", "cpu", "gpu"), default="auto", help="where to run (default auto)")
    add("--tta", nargs="?", const="flip", choices=TTA_MODES, metavar="MODE",
        help="test-time augmentation: flip (what a bare --tta means) averages the logits of each image and its "
        "mirror; flip-shift adds one-pixel shifts (airbench's); none. Default: the mode the checkpoint's recipe "
        "tests with (none but for speedrun)")
    add("--out", metavar="DIR", help="report folder (default: report/ beside the checkpoint)")
    return parser


def pick_device(accelerator: str) -> torch.device:
    if accelerator == "gpu" and not torch.cuda.is_available():
        raise UserError("--accelerator gpu was asked for but no CUDA GPU is available: use cpu or auto.")
    return torch.device("cuda" if accelerator != "cpu" and torch.cuda.is_available() else "cpu")


def test_loader(args: argparse.Namespace) -> torch.utils.data.DataLoader:
    """The test split as uint8 batches; normalisation is the checkpoint's, applied by the caller."""
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}.")
    source = {k: v for k, v in (("url", args.data_url), ("md5", args.data_md5)) if v is not None}
    dm = CIFAR10DataModule(data_dir=args.data_dir, batch_size=args.batch_size, eval_batch_size=args.batch_size,
                           val_size=0.1, augment="none", normalize="half", on_device=False, **source)
    # (val_size and normalize are placeholders: only the test split's uint8 images are read here)
    dm.prepare_data()
    dm.setup("test")
    return dm.test_dataloader()


@torch.no_grad()
def evaluate(model: torch.nn.Module, meta: Meta, loader, device: torch.device, tta: str = "none") -> Evaluation:
    n = len(meta.class_names)
    acc = MulticlassAccuracy(num_classes=n, average="micro").to(device)
    per_class = MulticlassAccuracy(num_classes=n, average=None).to(device)
    confusion = MulticlassConfusionMatrix(num_classes=n).to(device)
    wrong = Misclassified()
    n_images = 0
    for images, labels in tqdm(loader, desc="test", unit="batch", file=sys.stderr):
        images, labels = images.to(device), labels.to(device)
        preds = augmented_logits(model, meta.normalize(images), tta).argmax(dim=1)
        for metric in (acc, per_class, confusion):
            metric.update(preds, labels)
        wrong.update(images, preds, labels)
        n_images += len(labels)
    if n_images == 0:
        raise UserError("the test split is empty: check --data-dir / --data-url.")
    wrong_images, wrong_preds, wrong_targets = wrong.tensors()
    return Evaluation(acc=float(acc.compute()),
                      per_class_acc=dict(zip(meta.class_names, per_class.compute().tolist())),
                      confusion=confusion.compute().tolist(), n_images=n_images,
                      wrong_images=wrong_images, wrong_preds=wrong_preds, wrong_targets=wrong_targets)


def tables(result: Evaluation, class_names: list[str], tta: str) -> str:
    summary = f"test accuracy: {result.acc:.2%} on {result.n_images} images"
    summary += f" (TTA: {tta})" if tta != "none" else ""
    per_class = reporting.format_table(
        ["class", "accuracy", "images"],
        [[name, f"{acc:.2%}", sum(row)] for (name, acc), row in zip(result.per_class_acc.items(), result.confusion)])
    confusion = reporting.format_table(["true \\ predicted"] + class_names,
                                       [[name] + row for name, row in zip(class_names, result.confusion)])
    return "\n\n".join([summary, per_class, confusion])


def write_report(out: Path, result: Evaluation, meta: Meta, ckpt: Path, tta: str) -> dict:
    """The figures and report.json in `out`; returns the report."""
    out.mkdir(parents=True, exist_ok=True)
    figures = {
        "confusion_matrix.png": lambda: reporting.confusion_matrix_figure(result.confusion, meta.class_names),
        "per_class_accuracy.png": lambda: reporting.per_class_accuracy_figure(result.per_class_acc),
        "misclassified.png": lambda: reporting.misclassified_figure(
            result.wrong_images, result.wrong_preds, result.wrong_targets, meta.class_names, MAX_MISCLASSIFIED),
        "curves.png": lambda: reporting.curves_figure(ckpt.parent.parent),
    }
    written = []
    for name, make in figures.items():
        try:
            make().savefig(out / name, dpi=100)
            written.append(name)
        except LookupError as err:  # only curves: a checkpoint without its run's TensorBoard logs
            print(f"note: {err}; {name} skipped.", file=sys.stderr)
    report = {"checkpoint": str(ckpt), "model": meta.model, "tta": tta, "n_images": result.n_images,
              "acc": result.acc, "per_class_acc": result.per_class_acc, "class_names": meta.class_names,
              "confusion": result.confusion, "figures": written}
    atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    return report


@exits_cleanly
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = pick_device(args.accelerator)
    model, meta = load_checkpoint(args.ckpt, map_location=device)
    out = writable_folder(Path(args.out) if args.out else Path(args.ckpt).parent / "report", "--out")  # before the pass
    args.tta = args.tta or meta.hparams.get("tta", "none")  # checkpoints from before TTA modes have none
    result = evaluate(model, meta, test_loader(args), device, args.tta)
    print(tables(result, meta.class_names, args.tta))
    write_report(out, result, meta, Path(args.ckpt), args.tta)
    print(f"\nreport written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
