"""cifar10.checkpoint: a fit checkpoint rebuilds its model alone; anything else is a clear UserError."""

import os

import pytest
import torch
from helpers_ckpt import read_test_split, tiny_run  # noqa: F401 (tiny_run is a fixture)

from cifar10.checkpoint import load_checkpoint
from cifar10.data.normalization import normalize
from cifar10.errors import UserError
from cifar10.models import create_model
from cifar10.runs import resume_point


def test_checkpoint_describes_itself(tiny_run, tiny_archive):
    model, meta = load_checkpoint(tiny_run.ckpt)
    saved = torch.load(tiny_run.ckpt, weights_only=True)["hyper_parameters"]
    assert meta.model == "lenet" and type(model).model_name == "lenet"
    assert not model.training
    assert meta.class_names == saved["class_names"] and len(meta.class_names) == 10
    assert meta.mean == tuple(saved["mean"]) and meta.std == tuple(saved["std"])
    assert meta.mean != (0.5, 0.5, 0.5)  # the run used dataset normalisation
    images, _ = read_test_split(tiny_archive, tiny_run)
    assert torch.equal(model.normalize(images[:4]), normalize(images[:4], meta.mean, meta.std))  # the model's own


def test_loaded_weights_are_the_trained_ones(tiny_run):
    model, meta = load_checkpoint(tiny_run.ckpt)
    state = torch.load(tiny_run.ckpt, weights_only=True)["state_dict"]
    fresh = create_model(meta.model, **meta.hparams)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert not torch.equal(fresh.net[-1].weight, model.net[-1].weight)


def expect_user_error(path, match):
    with pytest.raises(UserError, match=match):
        load_checkpoint(path)


def test_missing_file_and_folder_are_user_errors(tmp_path):
    expect_user_error(tmp_path / "nope.ckpt", "does not exist")
    expect_user_error(tmp_path, "not a file")


def test_random_bytes_and_empty_file_are_user_errors(tmp_path):
    (tmp_path / "random.ckpt").write_bytes(os.urandom(4096))
    (tmp_path / "empty.ckpt").write_bytes(b"")
    expect_user_error(tmp_path / "random.ckpt", "not a PyTorch checkpoint")
    expect_user_error(tmp_path / "empty.ckpt", "not a PyTorch checkpoint")


def test_plain_state_dict_is_a_user_error(tiny_run, tmp_path):
    model, _ = load_checkpoint(tiny_run.ckpt)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    expect_user_error(tmp_path / "weights.pt", "no 'cifar10' entry")


class Payload:
    """Stands for any pickled object; weights-only loading must refuse to build it."""


def test_pickled_objects_are_refused_not_run(tiny_run, tmp_path):
    ckpt = torch.load(tiny_run.ckpt, weights_only=True)
    ckpt["extra"] = Payload()
    torch.save(ckpt, tmp_path / "unsafe.ckpt")
    expect_user_error(tmp_path / "unsafe.ckpt", "Payload object, which weights-only loading refuses")


def test_unregistered_model_name_is_a_user_error(tiny_run, tmp_path):
    ckpt = torch.load(tiny_run.ckpt, weights_only=True)
    ckpt["cifar10"]["model"] = "vit-huge"
    torch.save(ckpt, tmp_path / "other.ckpt")
    expect_user_error(tmp_path / "other.ckpt", "holds model 'vit-huge'.*known: .*lenet")


def test_weights_of_another_shape_are_a_user_error(tiny_run, tmp_path):
    ckpt = torch.load(tiny_run.ckpt, weights_only=True)
    ckpt["cifar10"]["model"] = ckpt["hyper_parameters"]["model"] = "mlp"
    torch.save(ckpt, tmp_path / "mismatch.ckpt")
    expect_user_error(tmp_path / "mismatch.ckpt", "do not fit model 'mlp'")


def test_normalisation_is_not_among_the_saved_weights(tiny_run):
    state = torch.load(tiny_run.ckpt, weights_only=True)["state_dict"]
    # its mean and std come from the hyper-parameters: checkpoints written before the model normalised its
    # own input have the same keys, and load as they are
    assert state and all(key.startswith("net.") for key in state)


def test_a_checkpoint_of_format_1_is_read_but_not_resumed(tiny_run, tmp_path):
    ckpt = torch.load(tiny_run.ckpt, weights_only=True)
    ckpt["cifar10"]["format"] = 1  # written before the schedule became a LambdaLR
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    model, meta = load_checkpoint(old)  # what evaluate, predict and export use
    assert meta.model == "lenet"
    with pytest.raises(UserError, match="format 1, written by an earlier cifar10.*cannot be resumed exactly"):
        resume_point(str(old), tmp_path, None)
