"""`python -m cifar10.evaluate`: test a checkpoint and write a report (tables, figures, report.json).

The numbers come from the model's own test step (trainer.test), the same that ends a fit.
"""

import argparse
import contextlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from torch import Tensor

from cifar10 import reporting
from cifar10.checkpoint import Meta, build_model, read_checkpoint
from cifar10.data import CIFAR10DataModule
from cifar10.data.download import FOLDER_NAME, has_batches
from cifar10.errors import CliParser, UserError, exits_cleanly
from cifar10.files import atomic_write_text, writable_folder
from cifar10.models.base import MAX_MISCLASSIFIED, ClassifierModule
from cifar10.settings import ACCELERATORS, add_data_source_flags, check_accelerator, uses_cuda
from cifar10.tta import TTA_MODES


@dataclass
class Evaluation:
    """A test pass's figures, named as a run's metrics.json names them (cifar10.runs.metrics.RunMetrics)."""

    test_acc: float
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
                       "misclassified.png, curves.png (from the run's metrics.json, metrics.csv or TensorBoard logs) "
                       "and report.json.")
    add = parser.add_argument
    add("--ckpt", required=True, metavar="PATH", help="checkpoint written by `python -m cifar10.fit`")
    add_data_source_flags(parser, data_dir="where CIFAR-10 is (or gets) downloaded (default: the data folder the "
                          "checkpoint was trained on when it holds the extracted data, else data)")
    add("--batch-size", type=int, default=500, metavar="N", help="test images per batch (default 500)")
    add("--accelerator", choices=ACCELERATORS, default="auto", help="where to run (default auto)")
    add("--tta", nargs="?", const="flip", choices=TTA_MODES, metavar="MODE",
        help="test-time augmentation: flip (what a bare --tta means) averages the logits of each image and its "
        "mirror; flip-shift adds one-pixel shifts (airbench's); none. Default: the mode the checkpoint's recipe "
        "tests with (none but for speedrun)")
    add("--precision", choices=("32", "16-mixed", "bf16-mixed"),
        help="default: the precision the checkpoint was trained with, which fit's own test ran in too (so the "
        "accuracies agree)")
    add("--out", metavar="DIR", help="report folder (default: report/ beside the checkpoint)")
    return parser


def test_data(args: argparse.Namespace) -> CIFAR10DataModule:
    """The data module whose test split is evaluated (uint8 batches; the model normalises them)."""
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}.")
    source = {k: v for k, v in (("url", args.data_url), ("md5", args.data_md5)) if v is not None}
    return CIFAR10DataModule.from_keywords(data_dir=args.data_dir, eval_batch_size=args.batch_size, augment="none",
                                           **source)


def evaluate(model: ClassifierModule, dm: CIFAR10DataModule, accelerator: str = "auto",
             tta: str = "none", precision: str = "32") -> Evaluation:
    """The model's own test step (trainer.test) over the test split, with `tta` in place of its recipe's."""
    model.hparams.tta = tta
    if precision == "16-mixed" and not uses_cuda(accelerator):
        precision = "bf16-mixed"  # what fit runs for it on a CPU too
    trainer = L.Trainer(accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                        enable_model_summary=False, precision=precision)
    with contextlib.redirect_stdout(sys.stderr):  # Lightning's progress bar: stdout carries only the tables
        trainer.test(model, datamodule=dm, verbose=False)
    results = model.test_results
    n_images = sum(map(sum, results["confusion"]))
    if n_images == 0:
        raise UserError("the test split is empty: check --data-dir / --data-url.")
    wrong = results["misclassified"]
    return Evaluation(test_acc=results["acc"], per_class_acc=results["per_class_acc"], confusion=results["confusion"],
                      n_images=n_images, wrong_images=wrong["images"], wrong_preds=wrong["preds"],
                      wrong_targets=wrong["targets"])


def tables(result: Evaluation, class_names: list[str], tta: str) -> str:
    summary = f"test accuracy: {result.test_acc:.2%} on {result.n_images} images"
    summary += f" (TTA: {tta})" if tta != "none" else ""
    per_class = reporting.format_table(
        ["class", "accuracy", "images"],
        [[name, f"{acc:.2%}", sum(row)] for (name, acc), row in zip(result.per_class_acc.items(), result.confusion)])
    confusion = reporting.format_table(["true \\ predicted"] + class_names,
                                       [[name] + row for name, row in zip(class_names, result.confusion)])
    return "\n\n".join([summary, per_class, confusion])


def write_report(out: Path, result: Evaluation, meta: Meta, ckpt: Path, tta: str, precision: str = "32") -> dict:
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
        except LookupError as err:  # only curves: a checkpoint without its run's record beside it
            print(f"note: {err}; {name} skipped.", file=sys.stderr)
    report = {"checkpoint": str(ckpt), "model": meta.model, "tta": tta, "precision": precision,
              "n_images": result.n_images,
              "test_acc": result.test_acc, "per_class_acc": result.per_class_acc, "class_names": meta.class_names,
              "confusion": result.confusion, "figures": written}
    atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    return report


def default_data_dir(ckpt: dict) -> str:
    """The data folder the checkpoint was trained on, when it holds the extracted data (read, never downloaded
    into: the checkpoint names it, so nothing is written there); else data. --data-dir wins over both."""
    recorded = (ckpt.get("datamodule_hyper_parameters") or {}).get("data_dir")
    if isinstance(recorded, str) and has_batches(Path(recorded).expanduser() / FOLDER_NAME):
        print(f"data: {recorded} (the checkpoint's training data; --data-dir chooses another)", file=sys.stderr)
        return recorded
    return "data"


@exits_cleanly
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_accelerator(args.accelerator)
    ckpt = read_checkpoint(args.ckpt)
    model, meta = build_model(ckpt, args.ckpt)
    model.eval()
    args.data_dir = args.data_dir or default_data_dir(ckpt)
    out = Path(args.out) if args.out else Path(args.ckpt).parent / "report"
    made = [p for p in (out, *out.parents) if not p.exists()]
    writable_folder(out, "--out")  # before the pass
    try:
        args.tta = args.tta or meta.hparams.get("tta", "none")  # checkpoints from before TTA modes have none
        precision = args.precision or meta.precision
        result = evaluate(model, test_data(args), args.accelerator, args.tta, precision)
        print(tables(result, meta.class_names, args.tta))
        write_report(out, result, meta, Path(args.ckpt), args.tta, precision)
    finally:  # a failed evaluation leaves no empty report folder behind
        for folder in made:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only while empty
    print(f"\nreport written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
