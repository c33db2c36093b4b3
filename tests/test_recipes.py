"""Recipes: every model has a valid tutorial and default recipe; the tutorial ones match the sources,
the default ones are what they were when they moved into the model files; a missing one is refused."""

import pytest

import cifar10.models.registry as registry
from cifar10.data.augment import AUGMENT_PRESETS
from cifar10.data.normalization import NORMALIZE_PRESETS
from cifar10.errors import UserError
from cifar10.models import create_model, model_info, model_names, register
from cifar10.models.base import ClassifierModule
from cifar10.models import recipe
from cifar10.optimizers import OPTIMIZERS
from cifar10.recipes import RECIPES, Recipe, ours
from cifar10.schedules import SCHEDULES
from cifar10.fit_settings import recipe_settings

KEYS = {"optimizer", "lr", "momentum", "nesterov", "weight_decay", "betas", "schedule", "label_smoothing",
        "bias_lr_scale", "tta", "batch_size", "max_epochs", "augment", "normalize", "val_size"}
DATA_KEYS = {"batch_size", "augment", "normalize", "val_size", "max_epochs"}


@pytest.mark.parametrize("name", list(RECIPES))
@pytest.mark.parametrize("model", model_names())
def test_every_model_has_a_valid_recipe(model, name):
    values = recipe_settings(model, name)  # the recipe over the defaults of what it does not set
    assert set(values) == KEYS
    assert values["optimizer"] in OPTIMIZERS and values["schedule"] in SCHEDULES
    assert values["augment"] in AUGMENT_PRESETS and values["normalize"] in NORMALIZE_PRESETS
    assert 0 < values["lr"] <= 2 and 0 <= values["momentum"] < 1 and 0 <= values["weight_decay"] < 0.1
    assert isinstance(values["betas"], list) and all(0 < b < 1 for b in values["betas"])
    assert 0 <= values["label_smoothing"] < 0.5
    assert isinstance(values["batch_size"], int) and values["batch_size"] > 0
    assert isinstance(values["max_epochs"], int) and values["max_epochs"] > 0
    val_size = values["val_size"]
    assert (isinstance(val_size, int) and val_size >= 0) or (isinstance(val_size, float) and 0 < val_size < 1)
    model_hparams = {k: v for k, v in values.items() if k not in DATA_KEYS}
    assert create_model(model, **model_hparams).hparams.lr == values["lr"]
    assert set(model_info(model).recipes) == set(RECIPES)


@pytest.mark.parametrize("model", model_names())
def test_default_recipe_schedules_the_lr_in_no_more_epochs_than_published(model):
    ours, published = recipe_settings(model, "default"), recipe_settings(model, "tutorial")
    assert recipe(model) == recipe(model, "default")  # "default" is the default
    assert ours["schedule"] in ("onecycle", "triangle", "cosine", "linear")
    assert ours["max_epochs"] <= published["max_epochs"]


@pytest.mark.parametrize("model, expected", [
    ("mlp", dict(optimizer="sgd", lr=0.1, weight_decay=1e-4, batch_size=256, max_epochs=100, augment="none")),
    ("shallow-cnn", dict(optimizer="sgd", lr=0.1, weight_decay=1e-4, batch_size=256, max_epochs=100,
                         augment="none")),
    ("deep-cnn", dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=256, max_epochs=100,
                      augment="crop-flip")),
    ("lenet", dict(optimizer="adam", lr=1e-3, batch_size=100, max_epochs=30, augment="heavy", normalize="half")),
    ("tutorial-cnn", dict(optimizer="sgd", lr=0.01, batch_size=20, max_epochs=20, augment="flip-rotate",
                          val_size=0.2)),
    ("convnet", dict(optimizer="adam", lr=3e-4, betas=[0.9, 0.995], weight_decay=5e-4, batch_size=1024,
                     augment="none", normalize="none")),
    ("cnn-bn", dict(optimizer="adam", lr=1e-3, weight_decay=5e-4, batch_size=128, max_epochs=50, augment="crop-flip",
                    normalize="dataset")),
    ("resnet18", dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="cosine", batch_size=128,
                      max_epochs=200)),
    ("speedrun", dict(optimizer="sgd", lr=1.5, momentum=0.85, nesterov=True, weight_decay=1.33e-3, schedule="triangle",
                      label_smoothing=0.2, bias_lr_scale=64.0, tta="flip-shift", batch_size=1024, max_epochs=10,
                      augment="shift-altflip", val_size=0)),
])
def test_tutorial_recipe_reproduces_the_published_setup(model, expected):
    values = recipe_settings(model, "tutorial")
    assert {k: values[k] for k in expected} == expected


ONECYCLE_SGD = dict(optimizer="sgd", nesterov=True, schedule="onecycle", weight_decay=5e-4, batch_size=256)
ONECYCLE_ADAMW = dict(ONECYCLE_SGD, optimizer="adamw", weight_decay=0.05)


@pytest.mark.parametrize("model, expected", [
    ("mlp", dict(ONECYCLE_SGD, lr=0.02, augment="flip", max_epochs=40, label_smoothing=0.0)),
    ("shallow-cnn", dict(ONECYCLE_SGD, lr=0.05, augment="crop-flip", max_epochs=30, label_smoothing=0.1)),
    ("deep-cnn", dict(ONECYCLE_SGD, lr=0.1, max_epochs=40, label_smoothing=0.1)),
    ("lenet", dict(ONECYCLE_ADAMW, lr=2e-3, batch_size=128, max_epochs=25, normalize="dataset")),
    ("tutorial-cnn", dict(ONECYCLE_SGD, lr=0.05, batch_size=128, max_epochs=15, val_size=5000)),
    ("convnet", dict(ONECYCLE_ADAMW, lr=1e-3, max_epochs=20, betas=[0.9, 0.999])),
    ("cnn-bn", dict(ONECYCLE_SGD, lr=0.05, max_epochs=30, label_smoothing=0.1)),
    ("resnet18", dict(ONECYCLE_SGD, lr=0.1, max_epochs=30, label_smoothing=0.1, tta="none")),
    ("speedrun", recipe_settings("speedrun", "tutorial")),  # airbench94's, until tuned on a GPU
])
def test_default_recipe_is_unchanged(model, expected):
    values = recipe_settings(model, "default")
    assert {k: values[k] for k in expected} == expected


@pytest.mark.parametrize("given, missing", [
    (dict(default=ours()), "tutorial"),
    (dict(tutorial=Recipe()), "default"),
    (dict(tutorial=Recipe(), default={"lr": 0.1}), "default"),  # a plain dict is not a recipe
    ({}, "tutorial and default"),
])
def test_a_model_without_a_recipe_is_refused_when_it_registers(monkeypatch, given, missing):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    first = missing.split()[0]
    with pytest.raises(UserError, match=f"model 'half-done' .* without its {missing} recipe: pass {first}="):
        register("half-done", published="x", **given)(type("HalfDone", (ClassifierModule,), {}))
    assert "half-done" not in model_names()


def test_unknown_recipe_lists_the_recipes():
    with pytest.raises(UserError, match="tutorial, default"):
        recipe("mlp", "fast")


def test_unknown_model_is_a_user_error():
    with pytest.raises(UserError, match="unknown model"):
        recipe("vgg16", "default")
