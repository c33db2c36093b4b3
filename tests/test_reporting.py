"""Figures and tables of cifar10.reporting, read back from what matplotlib drew."""

import os

import pytest
import torch
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from cifar10 import reporting

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_format_table_aligns_text_left_and_numbers_right():
    table = reporting.format_table(["class", "acc", "n"], [["cat", "100.00%", 10], ["airplane", "5.00%", 3]])
    lines = table.splitlines()
    assert lines[0].split() == ["class", "acc", "n"]
    assert set(lines[1]) == {"-", " "}
    assert lines[2] == "cat       100.00%  10"
    assert lines[3] == "airplane    5.00%   3"


def test_format_table_without_headers_has_no_header_line():
    assert reporting.format_table(["", ""], [["test acc", "91.0%"], ["epochs", 3]]) == \
        "test acc  91.0%\nepochs        3"


def test_format_table_shows_floats_with_four_decimals():
    assert reporting.format_table(["x"], [[0.123456]]).splitlines()[-1] == "0.1235"


@pytest.mark.parametrize("as_list", [False, True])
def test_confusion_matrix_figure_annotates_every_count(as_list, tmp_path):
    confusion = torch.arange(100).view(10, 10)
    fig = reporting.confusion_matrix_figure(confusion.tolist() if as_list else confusion, CLASSES)
    ax = fig.axes[0]
    assert sorted(int(t.get_text()) for t in ax.texts) == list(range(100))
    assert [t.get_text() for t in ax.get_xticklabels()] == CLASSES
    assert [t.get_text() for t in ax.get_yticklabels()] == CLASSES
    fig.savefig(tmp_path / "cm.png")
    assert Image.open(tmp_path / "cm.png").size[0] > 300


def test_per_class_accuracy_figure_draws_one_bar_per_class_in_percent():
    fig = reporting.per_class_accuracy_figure({name: i / 10 for i, name in enumerate(CLASSES)})
    bars = fig.axes[0].patches
    assert [round(b.get_width(), 6) for b in bars] == [10.0 * i for i in range(10)]


def test_misclassified_figure_titles_only_wrong_predictions():
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    targets = torch.tensor([0, 1, 2, 3, 4, 5])
    preds = torch.tensor([0, 9, 2, 8, 4, 7])
    fig = reporting.misclassified_figure(images, preds, targets, CLASSES)
    assert [ax.get_title() for ax in fig.axes] == ["truck (automobile)", "ship (cat)", "horse (dog)"]


def test_misclassified_figure_stops_at_max_images():
    images = torch.zeros(50, 3, 32, 32, dtype=torch.uint8)
    fig = reporting.misclassified_figure(images, torch.ones(50, dtype=torch.long), torch.zeros(50, dtype=torch.long),
                                         CLASSES, max_images=7)
    assert len(fig.axes) == 7


def test_labelled_grid_places_each_enlarged_image_under_a_strip_with_its_name():
    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    names = CLASSES[:9] + [""]  # the last cell has no name: its strip stays white
    grid = reporting.labelled_grid(images, names, per_row=4, scale=3, label_height=12, pad=2)
    cell_h, cell_w = 12 + 96 + 2, 96 + 2
    assert grid.dtype == torch.uint8 and grid.shape == (3, 3 * cell_h + 2, 4 * cell_w + 2)
    for i in range(10):
        row, col = divmod(i, 4)
        top, left = row * cell_h + 2, col * cell_w + 2
        enlarged = images[i].repeat_interleave(3, 1).repeat_interleave(3, 2)
        assert torch.equal(grid[:, top + 12: top + 12 + 96, left: left + 96], enlarged)
        strip = grid[:, top: top + 12, left: left + 96]
        assert (strip.min() < 100) == bool(names[i]), i  # dark text where there is a name, white where not


def write_epochs(run_dir, epochs, first_step, offset, mtime):
    """Scalars as Lightning logs them: an 'epoch' scalar beside each epoch-level value, keyed by step."""
    writer = SummaryWriter(run_dir, filename_suffix=f".{first_step}")
    for i, epoch in enumerate(epochs):
        step = first_step + 5 * i
        writer.add_scalar("epoch", epoch, step)
        for tag in reporting.CURVE_TAGS:
            writer.add_scalar(tag, offset + epoch, step)
        writer.add_scalar("train/loss_step", 99.0, step)
    writer.close()
    (event_file,) = [p for p in run_dir.glob(f"events.out.tfevents.*.{first_step}")]
    os.utime(event_file, (mtime, mtime))


def test_read_curves_keys_by_epoch_and_a_resumed_file_wins(tmp_path):
    write_epochs(tmp_path, [0, 1], first_step=4, offset=0.0, mtime=1_000)
    write_epochs(tmp_path, [1, 2], first_step=9, offset=0.5, mtime=2_000)  # resumed from epoch 1
    curves = reporting.read_curves(tmp_path)
    assert set(curves) == set(reporting.CURVE_TAGS)
    assert curves["val/acc"] == {0: 0.0, 1: 1.5, 2: 2.5}


def test_curves_figure_plots_train_and_validation(tmp_path):
    write_epochs(tmp_path, [0, 1, 2], first_step=4, offset=0.0, mtime=1_000)
    fig = reporting.curves_figure(tmp_path)
    for ax in fig.axes:
        assert [line.get_label() for line in ax.get_lines()] == ["train", "validation"]
        assert list(ax.get_lines()[0].get_xdata()) == [0, 1, 2]


def test_curves_figure_without_any_record_is_a_lookup_error(tmp_path):
    with pytest.raises(LookupError, match="no loss/accuracy per epoch"):
        reporting.curves_figure(tmp_path)
