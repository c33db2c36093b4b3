"""Figures and text tables that describe a trained classifier (shared by fit and evaluate).

Figures are built as bare matplotlib Figures (no pyplot state), so callers save or log them and
nothing accumulates in memory between calls; the grid of training images a run logs before its first
step is drawn with PIL instead (`labelled_grid`), as that one is paid for inside training.
"""

import csv
import json
import math
import re
from collections.abc import Sequence
from numbers import Number
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display here; must precede any pyplot import elsewhere

import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

CURVE_TAGS = {"train/loss_epoch": ("loss", "train"), "val/loss": ("loss", "validation"),
              "train/acc": ("accuracy", "train"), "val/acc": ("accuracy", "validation")}


def format_table(headers: list[str], rows: list[list]) -> str:
    """A plain aligned text table: numbers (and "12.5%") right-aligned, text left-aligned.
    The header line is left out when every header is empty."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [bool(rows) and all(_is_number(r[i]) for r in rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric)).rstrip()

    body = [line(r) for r in cells]
    if not any(headers):
        return "\n".join(body)
    return "\n".join([line(headers), "  ".join("-" * w for w in widths)] + body)


def _is_number(value) -> bool:
    return isinstance(value, Number) or bool(re.fullmatch(r"[-+]?\d[\d,]*(\.\d+)?%?", str(value)))


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def confusion_matrix_figure(confusion: torch.Tensor | list[list[int]], class_names: Sequence[str]) -> Figure:
    """Counts per (true, predicted) class pair, annotated in each cell."""
    counts = np.asarray(torch.as_tensor(confusion).cpu(), dtype=np.int64)
    n = len(class_names)
    fig = Figure(figsize=(1.0 + 0.6 * n, 0.6 * n + 0.8), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax, shrink=0.8)
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title="Confusion matrix")
    ax.set_xticklabels(class_names, rotation=45, ha="right")
    ax.set_yticklabels(class_names)
    threshold = counts.max() / 2 if counts.size else 0
    for (i, j), count in np.ndenumerate(counts):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                color="white" if count > threshold else "black")
    return fig


def per_class_accuracy_figure(per_class_acc: dict[str, float]) -> Figure:
    """Horizontal bars: test accuracy of each class, in percent."""
    names, values = list(per_class_acc), [100 * float(v) for v in per_class_acc.values()]
    fig = Figure(figsize=(6, 0.35 * len(names) + 1.2), layout="constrained")
    ax = fig.add_subplot()
    bars = ax.barh(names, values, color="tab:blue")
    ax.bar_label(bars, fmt="%.1f", padding=2, fontsize=8)
    ax.invert_yaxis()  # first class on top, as in the tables
    ax.set(xlim=(0, 110), xlabel="accuracy (%)", title="Accuracy per class")
    return fig


def labelled_grid(images_uint8: torch.Tensor, names: Sequence[str], per_row: int = 8, scale: int = 3,
                   label_height: int = 12, pad: int = 2) -> torch.Tensor:
    """A (3, H, W) uint8 image: each of the (N, 3, h, w) uint8 images enlarged `scale` times (nearest
    pixel) below a white strip with its name, `per_row` to a row, for TensorBoard's add_image.

    PIL rather than a matplotlib figure: 11 ms against about 100 ms for 32 images on the 2-core CPU
    (docs/benchmarks.md), paid by every training run before its first step.
    """
    images = images_uint8.cpu().repeat_interleave(scale, 2).repeat_interleave(scale, 3)
    n, _, height, width = images.shape
    cells = torch.full((n, 3, label_height + height, width), 255, dtype=torch.uint8)
    cells[:, :, label_height:] = images
    grid = make_grid(cells, nrow=per_row, padding=pad, pad_value=255)
    picture = Image.fromarray(grid.permute(1, 2, 0).contiguous().numpy())
    draw, font = ImageDraw.Draw(picture), ImageFont.load_default()
    for i, name in enumerate(names):
        row, col = divmod(i, per_row)
        centre = col * (width + pad) + pad + width / 2
        draw.text((centre - draw.textlength(name, font=font) / 2, row * (label_height + height + pad) + pad),
                  name, fill=(0, 0, 0), font=font)
    return torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1)


def misclassified_figure(images_uint8: torch.Tensor, preds: torch.Tensor, targets: torch.Tensor,
                         class_names: Sequence[str], max_images: int = 36) -> Figure:
    """A grid of the first wrongly predicted images, each titled "predicted (true)"."""
    wrong = torch.nonzero(torch.as_tensor(preds) != torch.as_tensor(targets)).flatten()[:max_images].tolist()
    cols = max(1, math.ceil(math.sqrt(len(wrong))))
    rows = max(1, math.ceil(len(wrong) / cols))
    height = 1.7 * rows + 0.5
    fig = Figure(figsize=(1.6 * cols, height))  # fixed margins: a layout engine is slow with many axes
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - 0.5 / height, wspace=0.1, hspace=0.3)
    fig.suptitle(f"Misclassified: {len(wrong)} shown, titled predicted (true)", y=1 - 0.15 / height)
    for k, i in enumerate(wrong):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.imshow(images_uint8[i].permute(1, 2, 0).cpu().numpy())
        ax.set_title(f"{class_names[int(preds[i])]} ({class_names[int(targets[i])]})", fontsize=8)
        ax.axis("off")
    return fig


def read_curves(run_dir: Path) -> dict[str, dict[int, float]]:
    """Per-epoch train/val loss and accuracy of a run, from its own record whichever loggers it had:
    metrics.json's `curves`, else the CSV logger's metrics.csv, else the TensorBoard event files."""
    for reader in (curves_from_metrics_json, curves_from_csv, curves_from_events):
        if curves := reader(Path(run_dir)):
            return curves
    return {}


def curves_from_metrics_json(run_dir: Path) -> dict[str, dict[int, float]]:
    try:
        saved = json.loads((run_dir / "metrics.json").read_text()).get("curves") or {}
    except (OSError, ValueError):
        return {}
    return {tag: {int(epoch): float(v) for epoch, v in values.items()} for tag, values in saved.items()
            if tag in CURVE_TAGS and values}


def curves_from_csv(run_dir: Path) -> dict[str, dict[int, float]]:
    """metrics.csv rows (Lightning's CSVLogger: a `step` and an `epoch` column, empty cells for tags not logged)."""
    try:
        with open(run_dir / "metrics.csv", newline="") as file:
            rows = list(csv.DictReader(file))
    except OSError:
        return {}
    curves: dict[str, dict[int, float]] = {}
    for row in rows:
        for tag in CURVE_TAGS.keys() & row.keys():
            if row[tag] and row.get("epoch"):
                curves.setdefault(tag, {})[int(float(row["epoch"]))] = float(row[tag])
    return curves


def curves_from_events(run_dir: Path) -> dict[str, dict[int, float]]:
    """Per-epoch values of the train/val loss and accuracy tags in the event files directly in `run_dir`.

    Steps map to epochs through the 'epoch' scalar Lightning logs alongside; without it the n-th value
    is epoch n. Later event files (a resumed run) override earlier values of the same epoch.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    curves: dict[str, dict[int, float]] = {}
    for events in sorted(Path(run_dir).glob("events.out.tfevents.*"), key=lambda p: (p.stat().st_mtime, p.name)):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        tags = set(acc.Tags()["scalars"])
        epoch_at = {e.step: int(e.value) for e in acc.Scalars("epoch")} if "epoch" in tags else {}
        for tag in CURVE_TAGS.keys() & tags:
            for n, e in enumerate(acc.Scalars(tag)):
                curves.setdefault(tag, {})[epoch_at.get(e.step, n)] = e.value
    return curves


def curves_figure(run_dir: Path) -> Figure:
    """Train and validation loss and accuracy per epoch; LookupError when the run has no such events."""
    curves = read_curves(run_dir)
    if not curves:
        raise LookupError(f"no loss/accuracy per epoch found under {run_dir} (metrics.json, metrics.csv or "
                          "TensorBoard events)")
    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = {"loss": fig.add_subplot(1, 2, 1), "accuracy": fig.add_subplot(1, 2, 2)}
    for tag, (quantity, split) in CURVE_TAGS.items():
        if tag in curves:
            epochs = sorted(curves[tag])
            axes[quantity].plot(epochs, [curves[tag][e] for e in epochs], marker="o", label=split)
    for quantity, ax in axes.items():
        ax.set(xlabel="epoch", ylabel=quantity, title=quantity.capitalize())
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    return fig
