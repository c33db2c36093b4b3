"""Registries (name -> function, class or preset): an unknown name is a UserError naming the known ones,
in programmatic calls too (the command line offers the keys as choices)."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from cifar10.data import CIFAR10DataModule
from cifar10.data.augment import AUGMENT_PRESETS, augment
from cifar10.data.normalization import NORMALIZE_PRESETS
from cifar10.errors import UserError
from cifar10.optimizers import OPTIMIZERS, build_optimizer
from cifar10.schedules import SCHEDULES, lr_factor
from cifar10.tta import TTA_MODES, augmented_logits


def choices(registry: dict) -> str:
    return ", ".join(registry)


def hparams(**overrides) -> SimpleNamespace:
    values = dict(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=False, weight_decay=0.0, betas=(0.9, 0.999),
                  schedule="none", bias_lr_scale=1.0)
    return SimpleNamespace(**{**values, **overrides})


def test_the_registries_hold_the_names_they_always_had():
    assert list(OPTIMIZERS) == ["sgd", "adam", "adamw", "muon"]
    assert list(SCHEDULES) == ["onecycle", "triangle", "cosine", "linear", "none"]
    assert list(TTA_MODES) == ["none", "flip", "flip-shift"]
    assert list(AUGMENT_PRESETS) == ["none", "flip", "crop-flip", "shift-altflip", "flip-rotate", "heavy"]
    assert list(NORMALIZE_PRESETS) == ["half", "dataset", "none"]


@pytest.mark.parametrize("call, kind, registry", [
    (lambda: build_optimizer(hparams(optimizer="lamb"), nn.Linear(2, 2), 10), "optimizer 'lamb'", OPTIMIZERS),
    (lambda: build_optimizer(hparams(schedule="step"), nn.Linear(2, 2), 10), "schedule 'step'", SCHEDULES),
    (lambda: lr_factor("step", 10), "schedule 'step'", SCHEDULES),
    (lambda: augmented_logits(nn.Identity(), torch.zeros(1, 3, 4, 4), "rotate"),
     "test-time augmentation 'rotate'", TTA_MODES),
    (lambda: augment(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), "mixup", torch.Generator()),
     "augmentation preset 'mixup'", AUGMENT_PRESETS),
    (lambda: CIFAR10DataModule.from_keywords(augment="mixup"), "augmentation preset 'mixup'", AUGMENT_PRESETS),
    (lambda: CIFAR10DataModule.from_keywords(normalize="imagenet"), "normalisation preset 'imagenet'", NORMALIZE_PRESETS),
], ids=["optimizer", "optimizer-schedule", "lr_factor", "tta", "augment", "datamodule-augment",
        "datamodule-normalize"])
def test_an_unknown_name_is_a_user_error_naming_the_choices(call, kind, registry):
    with pytest.raises(UserError, match=f"unknown {kind}: choose one of {choices(registry)}\\.$"):
        call()


def test_an_empty_batch_is_still_checked():
    with pytest.raises(UserError, match="unknown augmentation preset"):
        augment(torch.zeros(0, 3, 4, 4, dtype=torch.uint8), "mixup", torch.Generator())


def test_muon_is_refused_for_a_model_without_its_groups():
    with pytest.raises(UserError, match="muon optimizer needs a model .* choose sgd, adam or adamw"):
        build_optimizer(hparams(optimizer="muon"), nn.Linear(2, 2), 10)


def test_the_constant_schedule_is_the_peak_throughout_and_builds_no_scheduler():
    assert [lr_factor("none", 4)(step) for step in range(6)] == [1.0] * 6
    assert isinstance(build_optimizer(hparams(), nn.Linear(2, 2), float("inf")), torch.optim.SGD)
