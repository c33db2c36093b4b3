"""Models: parameter counts as published, memorising a batch under a real Trainer, the registry (a new
file is found, registry errors), optimizers and schedules, test metrics, channels_last, checkpoints
that describe themselves."""

import re
import sys

import lightning as L
import pytest
import torch
import yaml
from torch.utils.data import DataLoader, TensorDataset

import cifar10.models as models
import cifar10.models.registry as registry
from cifar10.data import CIFAR10DataModule
from cifar10.errors import UserError
from cifar10.fit_settings import models_epilog
from cifar10.models import create_model, model_info, model_names, register
from cifar10.models.base import ClassifierModule
from cifar10.models.speedrun import whiten_
from cifar10.models import recipe
from cifar10.optimizers import build_optimizer
from cifar10.recipes import Recipe, ours
from cifar10.schedules import lr_factor


def conv(c_in: int, c_out: int, k: int = 3, bias: bool = True) -> int:
    return c_in * c_out * k * k + (c_out if bias else 0)


def linear(n_in: int, n_out: int, bias: bool = True) -> int:
    return n_in * n_out + (n_out if bias else 0)


def bn(c: int) -> int:
    return 2 * c  # weight and bias


def basic_block(c_in: int, c_out: int, stride: int) -> int:
    shortcut = conv(c_in, c_out, 1, bias=False) + bn(c_out) if stride != 1 or c_in != c_out else 0
    return conv(c_in, c_out, bias=False) + bn(c_out) + conv(c_out, c_out, bias=False) + bn(c_out) + shortcut


# Worked out by hand from each model's published layers, in the order --help lists the models.
EXPECTED_PARAMS = {
    # 3072*512+512 + 512*512+512 + 512*10+10
    "mlp": 1_841_162,
    # (3*32*9+32) + (32*64*9+64) + (64*128*9+128) + 32768*10+10
    "shallow-cnn": conv(3, 32) + conv(32, 64) + conv(64, 128) + linear(32768, 10),
    # six convs 3-32-64-128-128-256-256, a BN (2c) after each; 4096*1024+1024 + 1024*512+512 + 512*10+10
    "deep-cnn": conv(3, 32) + conv(32, 64) + conv(64, 128) + conv(128, 128) + conv(128, 256) + conv(256, 256)
    + bn(32) + bn(64) + bn(128) + bn(128) + bn(256) + bn(256)
    + linear(4096, 1024) + linear(1024, 512) + linear(512, 10),
    # (3*16*9+16) + (16*32*9+32) + (32*64*9+64) + 1024*500+500 + 500*10+10
    "lenet": conv(3, 16) + conv(16, 32) + conv(32, 64) + linear(1024, 500) + linear(500, 10),
    # the same layers as lenet; dropout has no parameters
    "tutorial-cnn": conv(3, 16) + conv(16, 32) + conv(32, 64) + linear(1024, 500) + linear(500, 10),
    # convs 3-8-32-64-128-256; 16384*256+256 + 256*128+128 + 128*64+64 + 64*10+10
    "convnet": conv(3, 8) + conv(8, 32) + conv(32, 64) + conv(64, 128) + conv(128, 256)
    + linear(16384, 256) + linear(256, 128) + linear(128, 64) + linear(64, 10),
    # deep-cnn's convs and head, BN only after the first conv of each block (32, 128, 256)
    "cnn-bn": conv(3, 32) + conv(32, 64) + conv(64, 128) + conv(128, 128) + conv(128, 256) + conv(256, 256)
    + bn(32) + bn(128) + bn(256) + linear(4096, 1024) + linear(1024, 512) + linear(512, 10),
    # 3x3 stem (no bias) + BN; stages [2,2,2,2] of 64-128-256-512; linear 512*10+10 = 11,173,962
    "resnet18": conv(3, 64, bias=False) + bn(64)
    + basic_block(64, 64, 1) + basic_block(64, 64, 1) + basic_block(64, 128, 2) + basic_block(128, 128, 1)
    + basic_block(128, 256, 2) + basic_block(256, 256, 1) + basic_block(256, 512, 2) + basic_block(512, 512, 1)
    + linear(512, 10),
    # 2x2 patch conv 3-24 with bias; per block conv c_in-c (no bias) + BN + conv c-c + BN; linear 256*10
    "speedrun": conv(3, 24, 2)
    + conv(24, 64, bias=False) + bn(64) + conv(64, 64, bias=False) + bn(64)
    + conv(64, 256, bias=False) + bn(256) + conv(256, 256, bias=False) + bn(256)
    + conv(256, 256, bias=False) + bn(256) + conv(256, 256, bias=False) + bn(256)
    + linear(256, 10, bias=False),
}
EXPECTED_PARAMS["speedrun-muon"] = EXPECTED_PARAMS["speedrun"]  # the same layers, trained another way

# Adam (no weight decay, no schedule) learning rate and steps that memorise 16 random-label images;
# a model not listed is tried with OVERFIT_DEFAULT.
OVERFIT_DEFAULT = (1e-3, 25)
OVERFIT = {
    "mlp": (1e-3, 10),
    "shallow-cnn": (1e-3, 15),
    "deep-cnn": (1e-3, 25),
    "lenet": (3e-3, 32),
    "tutorial-cnn": (3e-3, 32),
    "convnet": (3e-4, 80),  # two Dropout2d(0.5): slower to memorise
    "cnn-bn": (1e-3, 16),
    "resnet18": (1e-3, 8),
    "speedrun": (1e-2, 12),
    "speedrun-muon": (3e-2, 25),  # its head divides by 256, not 9: a larger step
}
SLOW = {"resnet18"}


@pytest.fixture(autouse=True)
def one_thread():
    """Two busy cores: one intra-op thread avoids contention that slows these small nets tenfold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_trainer(**kwargs) -> L.Trainer:
    options = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False)
    return L.Trainer(**{**options, **kwargs})


def batch_loader(n: int = 16, seed: int = 0) -> DataLoader:
    """One fixed batch of uniform-noise uint8 images with random labels, served once per epoch."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=generator, dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=generator)
    return DataLoader(TensorDataset(images, labels), batch_size=n)


class StepLosses(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def test_registry_has_every_published_architecture_from_small_to_big():
    assert [name for name in model_names() if name in EXPECTED_PARAMS] == list(EXPECTED_PARAMS)
    assert all(model_info(name).published for name in model_names())


@pytest.mark.parametrize("name", model_names())
def test_parameter_count_matches_the_published_layers(name):
    if name not in EXPECTED_PARAMS:
        pytest.fail(f"add {name!r} to EXPECTED_PARAMS: its parameter count worked out from the published layers")
    model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == EXPECTED_PARAMS[name]
    assert model(model.example_input_array).shape == (1, 10)


def test_convnet_drops_channels_after_its_third_and_fifth_conv_as_its_source_does():
    kinds = [type(layer).__name__ for layer in create_model("convnet").net if not isinstance(layer, torch.nn.ReLU)]
    assert kinds[:9] == ["Conv2d", "Conv2d", "MaxPool2d", "Conv2d", "Dropout2d", "Conv2d", "MaxPool2d", "Conv2d",
                         "Dropout2d"]


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in model_names()])
def test_model_memorises_one_batch(name):
    lr, steps = OVERFIT.get(name, OVERFIT_DEFAULT)
    L.seed_everything(0, verbose=False)
    model = create_model(name, optimizer="adam", lr=lr, weight_decay=0.0, schedule="none")
    losses = StepLosses()
    tiny_trainer(max_steps=steps, callbacks=[losses]).fit(model, batch_loader())
    final = sum(losses.losses[-3:]) / 3
    assert final < 0.25 * losses.losses[0], losses.losses
    assert model.trainer.callback_metrics["train/acc"] >= 0.9  # the last step, with dropout active


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(UserError, match="resnet18.*speedrun|speedrun.*resnet18") as err:
        create_model("resnet-18")
    assert "resnet-18" in str(err.value)


def test_unknown_hparam_lists_the_ones_the_model_takes():
    with pytest.raises(UserError, match="dropout.*label_smoothing"):
        create_model("mlp", dropout=0.5)


def test_hparams_of_another_model_are_refused():
    with pytest.raises(UserError, match="another model"):
        create_model("mlp", model="lenet")


def test_bad_optimizer_and_schedule_are_user_errors():
    with pytest.raises(UserError, match="adamw"):
        create_model("mlp", optimizer="rmsprop")
    with pytest.raises(UserError, match="onecycle"):
        create_model("mlp", schedule="step")


def test_a_name_registers_once():
    with pytest.raises(ValueError, match="twice"):
        register("mlp", published="again", tutorial=Recipe(), default=ours())(type("Again", (ClassifierModule,), {}))


DROPPED_IN = '''"""A model file as someone would add one: layers, published result and both recipes, nothing else."""

from torch import nn

from cifar10.models.base import ClassifierModule
from cifar10.models.registry import register
from cifar10.recipes import Recipe, ours


@register("dropped-in", order=45, published="99.9% in no time (a test's model)",
          tutorial=Recipe(lr=0.01, max_epochs=3), default=ours(lr=0.02, max_epochs=2))
class DroppedIn(ClassifierModule):
    def build_net(self) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
'''


@pytest.fixture
def scratch_registry(monkeypatch):
    """The registry as it is, restored after the test: models registered in the test go away."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_a_new_model_file_is_found_with_nothing_else_edited(tmp_path, monkeypatch, scratch_registry):
    """A module file beside the others is imported by the registry; it shows in model_names() at its order,
    in fit --help with its published result, and its recipes come from recipe()."""
    folder = tmp_path / "more_models"
    folder.mkdir()
    (folder / "dropped_in.py").write_text(DROPPED_IN)
    (folder / "_helpers.py").write_text("raise AssertionError('private modules are not imported')\n")
    monkeypatch.setattr(models, "__path__", [*models.__path__, str(folder)])  # as if the file were in the package
    builtins = model_names()
    try:
        found = models.import_architectures()
        assert "dropped_in" in found and "_helpers" not in found and "base" not in found
        assert "registry" not in found and "layers" not in found
        lenet = builtins.index("lenet")
        assert model_names() == [*builtins[:lenet + 1], "dropped-in", *builtins[lenet + 1:]]  # order 45: after lenet
        assert re.search(r"^  dropped-in +99\.9% in no time \(a test's model\)$", models_epilog(), re.M)
        assert recipe("dropped-in", "tutorial")["lr"] == 0.01 and recipe("dropped-in")["max_epochs"] == 2
        assert create_model("dropped-in").model_name == "dropped-in"
    finally:
        sys.modules.pop(f"{models.__name__}.dropped_in", None)
        if hasattr(models, "dropped_in"):
            delattr(models, "dropped_in")


def test_a_model_without_an_order_is_listed_last(scratch_registry):
    register("zz-last", published="x", tutorial=Recipe(), default=ours())(type("Last", (ClassifierModule,), {}))
    register("aa-last", published="x", tutorial=Recipe(), default=ours())(type("Last", (ClassifierModule,), {}))
    assert model_names()[-2:] == ["aa-last", "zz-last"]  # after every ordered one, by name


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("schedule", ["none", "cosine", "onecycle"])
def test_configure_optimizers_builds_each_optimizer_and_schedule(optimizer, schedule):
    model = create_model("mlp", optimizer=optimizer, schedule=schedule, lr=0.05, momentum=0.8, nesterov=True,
                         betas=(0.8, 0.99), weight_decay=1e-3)
    trainer = tiny_trainer(max_steps=4)
    trainer.fit(model, batch_loader(4))
    opt = trainer.optimizers[0]
    assert type(opt).__name__.lower() == optimizer
    group = opt.param_groups[0]
    assert group["weight_decay"] == 1e-3
    if optimizer == "sgd":
        assert (group["momentum"], group["nesterov"]) == (0.8, True)
    else:
        assert tuple(group["betas"]) == (0.8, 0.99)
    configs = trainer.lr_scheduler_configs
    if schedule == "none":
        assert configs == [] and group["lr"] == 0.05
    else:
        assert configs[0].interval == "step"
        assert configs[0].scheduler.last_epoch == 4  # stepped once per optimizer step
        assert group["lr"] < 0.05  # one-cycle warms up from below, cosine decays from the top


def test_schedule_needs_a_finite_run():
    model = create_model("mlp", schedule="cosine")
    with pytest.raises(UserError, match="max_epochs or max_steps"):
        tiny_trainer(max_epochs=-1).fit(model, batch_loader(4))


def test_test_step_fills_test_results():
    model = create_model("mlp")
    tiny_trainer().test(model, DataLoader(batch_loader(20).dataset, batch_size=8))
    results = model.test_results
    assert list(results["per_class_acc"]) == list(model.hparams.class_names)
    assert sum(map(sum, results["confusion"])) == 20
    correct = sum(results["confusion"][i][i] for i in range(10))
    assert results["acc"] == pytest.approx(correct / 20)
    wrong = results["misclassified"]
    assert len(wrong["preds"]) == 20 - correct and bool((wrong["preds"] != wrong["targets"]).all())
    assert wrong["images"].dtype == torch.uint8 and wrong["images"].shape == (20 - correct, 3, 32, 32)


def test_channels_last_gives_the_same_logits():
    torch.manual_seed(0)
    plain = create_model("speedrun").eval()
    fast = create_model("speedrun", channels_last=True).eval()
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert fast.net[0].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast(x), plain(x), rtol=1e-4, atol=1e-5)


def test_speedrun_whitening_decorrelates_patches():
    layer = torch.nn.Conv2d(3, 24, 2)
    mixing = torch.tensor([[1.0, 0.0, 0.0], [0.6, 1.0, 0.0], [0.3, 0.5, 1.0]])
    noise = torch.randn(64, 3, 32, 32)
    images = torch.einsum("oc,nchw->nohw", mixing, noise + noise.roll(1, -1))  # correlated colours, pixels
    whiten_(layer, images)
    with torch.no_grad():
        out = layer(images)[:, :12].transpose(0, 1).reshape(12, -1)
    torch.testing.assert_close(out.cov(), torch.eye(12), atol=2e-2, rtol=0)


def test_checkpoint_describes_itself_and_reloads_with_weights_only(tmp_path):
    model = create_model("lenet", mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26), label_smoothing=0.1)
    trainer = tiny_trainer(max_steps=2)
    trainer.fit(model, batch_loader(4))
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["cifar10"] == {"model": "lenet", "format": 2}
    hparams = checkpoint["hyper_parameters"]
    assert hparams["model"] == "lenet" and hparams["label_smoothing"] == 0.1
    assert list(hparams["mean"]) == [0.49, 0.48, 0.45] and list(hparams["std"]) == [0.25, 0.24, 0.26]
    assert list(hparams["class_names"])[:2] == ["airplane", "automobile"]
    assert yaml.safe_load(yaml.safe_dump(dict(hparams))) == dict(hparams)  # hparams.yaml stays plain
    restored = create_model(checkpoint["cifar10"]["model"], **hparams)
    restored.load_state_dict(checkpoint["state_dict"])
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(restored.eval()(x), model.eval()(x))


def test_speedrun_whitens_from_the_training_images_at_fit_start(tiny_archive, tmp_path):
    data = CIFAR10DataModule.from_keywords(data_dir=tmp_path, batch_size=50, val_size=0, url=tiny_archive.url, md5=tiny_archive.md5)
    model = create_model("speedrun")
    tiny_trainer(max_steps=1).fit(model, datamodule=data)
    expected = torch.nn.Conv2d(3, 24, 2)
    whiten_(expected, model.normalize(data.train_images))
    torch.testing.assert_close(model.net[0].weight, expected.weight)  # set at fit start, then frozen


@pytest.mark.parametrize("schedule, shape", [
    ("onecycle", {}),
    ("triangle", dict(pct_start=0.23, anneal_strategy="linear", div_factor=1 / 0.2, final_div_factor=0.2 / 0.07)),
])
@pytest.mark.parametrize("total", [5, 7, 100])
def test_one_cycle_schedules_follow_pytorchs_one_cycle_lr(schedule, shape, total):
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.5)
    reference = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.5, total_steps=total, cycle_momentum=False,
                                                    **shape)
    factor = lr_factor(schedule, total)
    for step in range(total):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5 * factor(step), rel=1e-12, abs=1e-15)
        optimizer.step()
        reference.step()


@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
def test_a_schedule_resumed_into_a_longer_run_ends_at_the_new_length(schedule):
    model = create_model("mlp", schedule=schedule, lr=1.0)
    short = build_optimizer(model.hparams, model.net, 10)
    for _ in range(4):
        short["optimizer"].step()
        short["lr_scheduler"]["scheduler"].step()
    longer = build_optimizer(model.hparams, model.net, 20)  # what configure_optimizers builds on resume
    optimizer, scheduler = longer["optimizer"], longer["lr_scheduler"]["scheduler"]
    optimizer.load_state_dict(short["optimizer"].state_dict())
    scheduler.load_state_dict(short["lr_scheduler"]["scheduler"].state_dict())  # the checkpoint's state
    lrs = []
    for _ in range(16):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[-1] == pytest.approx(1.0 * lr_factor(schedule, 20)(20)) and lrs[-1] < 1e-3  # the new end, step 20
    if schedule == "onecycle":
        assert max(lrs) == pytest.approx(1.0, abs=0.02)  # the peak moved to step 5 of 20
