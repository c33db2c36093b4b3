"""Muon: the Newton-Schulz step against float64, the routing optimizer against PyTorch's SGD and a step by
hand, speedrun-muon's groups and schedules, and whole fits that resume exactly and match under DDP."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from test_resume import InterruptAt
from test_speedrun_training import speedrun_args

from cifar10.fit import main
from cifar10.models import create_model, recipe
from cifar10.models.speedrun_muon import BIAS_LR, DECAY_PER_STEP, HEAD_LR, SGD_MOMENTUM
from cifar10.muon import NS_COEFFICIENTS, MuonSGD, newton_schulz


def newton_schulz_float64(g: torch.Tensor, steps: int) -> torch.Tensor:
    """The quintic iteration written out on X X^T in float64, whatever the shape."""
    a, b, c = NS_COEFFICIENTS
    x = g.double() / g.double().norm()
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + b * gram @ x + c * gram @ gram @ x
    return x


@pytest.mark.parametrize("shape", [(64, 24 * 9), (256, 64 * 9), (10, 10), (40, 12)])
def test_newton_schulz_agrees_with_a_float64_reference(shape):
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    ours = newton_schulz(g, steps=3)
    assert ours.dtype == torch.float32 and ours.shape == g.shape
    torch.testing.assert_close(ours.double(), newton_schulz_float64(g, 3), atol=2e-5, rtol=1e-4)


def test_newton_schulz_keeps_the_singular_vectors_and_pulls_the_values_towards_one():
    g = torch.randn(64, 96, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    u, s, vt = torch.linalg.svd(g, full_matrices=False)
    result = newton_schulz(g, steps=5, dtype=torch.float64)
    inner = u.T @ result @ vt.T  # U^T f(G) V: diagonal when f acts on the singular values alone
    torch.testing.assert_close(inner, torch.diag(torch.diagonal(inner)), atol=1e-10, rtol=0)
    values = torch.diagonal(inner)
    assert values.min() > 0.5 and values.max() < 1.5 and s.max() / s.min() > 5  # a spread input, evened out


def paired_params(seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    shapes = [(8, 3, 3, 3), (8,), (10, 8)]
    a = [torch.randn(*s, generator=generator).requires_grad_() for s in shapes]
    return a, [p.detach().clone().requires_grad_() for p in a]


def set_grads(params: list[torch.Tensor], step: int) -> None:
    generator = torch.Generator().manual_seed(100 + step)
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator)


def test_sgd_groups_step_exactly_as_pytorchs_sgd():
    ours_params, sgd_params = paired_params()
    ours = MuonSGD([{"params": ours_params[:2], "lr": 0.3, "weight_decay": 0.01}, {"params": ours_params[2:]}],
                   lr=0.1, momentum=0.85, nesterov=True)
    sgd = torch.optim.SGD([{"params": sgd_params[:2], "lr": 0.3, "weight_decay": 0.01}, {"params": sgd_params[2:]}],
                          lr=0.1, momentum=0.85, nesterov=True)
    for step in range(3):
        set_grads(ours_params, step)
        set_grads(sgd_params, step)
        ours.step()
        sgd.step()
    for a, b in zip(ours_params, sgd_params):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_a_muon_group_normalises_the_filters_then_steps_along_the_orthogonalised_nesterov_momentum():
    filters = torch.randn(8, 3, 3, 3, generator=torch.Generator().manual_seed(2)).requires_grad_()
    start = filters.detach().clone()
    opt = MuonSGD([{"params": [filters], "muon": True, "momentum": 0.6}], lr=0.24)
    grads = [torch.randn(8, 3, 3, 3, generator=torch.Generator().manual_seed(10 + k)) for k in range(2)]
    expected, buffer = start.clone(), torch.zeros_like(start)
    for g in grads:
        filters.grad = g
        opt.step()
        buffer = 0.6 * buffer + g
        update = (g + 0.6 * buffer).reshape(8, -1)
        expected = expected * (8 ** 0.5 / expected.norm())
        expected = expected - 0.24 * newton_schulz_float64(update, 3).float().view_as(expected)
    torch.testing.assert_close(filters.detach(), expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(opt.state[filters]["momentum_buffer"], buffer)


def test_a_muon_group_with_weight_decay_is_refused():
    with pytest.raises(ValueError, match="weight decay"):
        MuonSGD([{"params": [torch.zeros(2, 2, requires_grad=True)], "muon": True, "weight_decay": 0.1}], lr=0.1)


def test_the_recipe_is_airbench94_muons():
    r = recipe("speedrun-muon", "default")
    assert (r["optimizer"], r["batch_size"], r["max_epochs"], r["schedule"]) == ("muon", 2000, 8, "linear")
    assert (r["lr"], r["momentum"], r["label_smoothing"], r["tta"], r["augment"]) == (
        0.24, 0.6, 0.2, "flip-shift", "shift-altflip")
    assert recipe("speedrun-muon", "tutorial") == r


MODEL_KEYS = ("optimizer", "lr", "momentum", "nesterov", "weight_decay", "schedule", "label_smoothing",
              "bias_lr_scale", "tta")


def configured(steps_per_epoch: int = 10, epochs: int = 8, **overrides):
    """speedrun-muon with its recipe's hyper-parameters, and the optimizer and scheduler it configures for a run
    of the given length (all configure_optimizers reads of the trainer)."""
    values = {k: v for k, v in recipe("speedrun-muon", "default").items() if k in MODEL_KEYS}
    model = create_model("speedrun-muon", **values | overrides)
    model.trainer = SimpleNamespace(estimated_stepping_batches=steps_per_epoch * epochs, max_epochs=epochs)
    config = model.configure_optimizers()
    return model, config["optimizer"], config["lr_scheduler"]["scheduler"]


def test_speedrun_muon_puts_every_trainable_weight_in_one_group_with_airbench94_muons_rates():
    model, opt, _ = configured()
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    grouped = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(trainable)  # each once
    whiten, norms, head, filters = opt.param_groups
    assert whiten["params"] == [model.net[0].bias] and head["params"] == [model.net[-2].weight]
    assert filters["muon"] and all(p.ndim == 4 for p in filters["params"]) and len(filters["params"]) == 6
    assert not any(g["muon"] for g in (whiten, norms, head))
    assert whiten["lr"] == pytest.approx(BIAS_LR) and head["lr"] == pytest.approx(HEAD_LR)
    for g in (whiten, norms, head):  # the same decay per step in every SGD group
        assert g["lr"] * g["weight_decay"] == pytest.approx(DECAY_PER_STEP) and g["momentum"] == SGD_MOMENTUM
    assert (filters["lr"], filters["momentum"], filters["weight_decay"]) == (0.24, 0.6, 0.0)


def test_lr_scales_every_group_with_muons_rate():
    _, base, _ = configured()
    _, doubled, _ = configured(lr=0.48)
    assert [g["lr"] for g in doubled.param_groups] == pytest.approx([2 * g["lr"] for g in base.param_groups])


def test_the_whitening_bias_rate_falls_to_zero_in_3_epochs_the_others_at_the_end():
    _, opt, sched = configured(steps_per_epoch=10, epochs=8)
    rates = []
    for _ in range(80):
        rates.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    first = rates[0]
    assert [r[0] / first[0] for r in (rates[15], rates[30], rates[79])] == pytest.approx([0.5, 0.0, 0.0])
    assert [r[3] / first[3] for r in (rates[40], rates[79])] == pytest.approx([0.5, 1 / 80])


def muon_args(archive, data, logdir, *extra: str) -> list[str]:
    return speedrun_args(archive, data, logdir, *extra, model="speedrun-muon")


@pytest.mark.slow
def test_speedrun_muon_interrupted_mid_epoch_ends_like_an_uninterrupted_one(tiny_archive, tmp_path):
    """Ctrl-C in step 22 of 25 (after the whitening bias stopped), then --ckpt-path last == 25 steps straight."""
    data = tmp_path / "data"
    assert main(muon_args(tiny_archive, data, tmp_path / "straight")) == 0
    assert main(muon_args(tiny_archive, data, tmp_path / "split"), callbacks=[InterruptAt(epoch=4, batch=2)]) == 130
    assert main([*muon_args(tiny_archive, data, tmp_path / "split"), "--ckpt-path", "last"]) == 0
    final = {}
    for name in ("straight", "split"):
        run = tmp_path / name / "speedrun-muon" / "version_0"
        final[name] = (torch.load(run / "checkpoints" / "last.ckpt", weights_only=True),
                       json.loads((run / "metrics.json").read_text()))
    (a, metrics_a), (b, metrics_b) = final["straight"], final["split"]
    assert metrics_a["test_acc"] == metrics_b["test_acc"] and metrics_a["epochs"] == 5
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    for state_a, state_b in zip(a["optimizer_states"][0]["state"].values(),
                                b["optimizer_states"][0]["state"].values()):
        assert torch.equal(state_a["momentum_buffer"], state_b["momentum_buffer"])


def fit_in_subprocess(archive, tmp_path: Path, name: str, *extra: str) -> Path:
    args = ["--model", "speedrun-muon", "--data-url", archive.url, "--data-md5", archive.md5,
            "--data-dir", str(tmp_path / "data"), "--accelerator", "cpu", "--val-size", "60",
            "--max-epochs", "4", "--logdir", str(tmp_path / name), *extra]
    done = subprocess.run([sys.executable, "-m", "cifar10.fit", *args], capture_output=True, text=True,
                          env=os.environ | {"CIFAR10_ALLOW_SUBSET": "1"}, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp_path / name / "speedrun-muon" / "version_0"


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_at_the_same_global_batch(tiny_archive, tmp_path):
    """4 epochs of 4 steps (240 images), past the whitening bias's 3: no parameter leaves the backward (DDP's
    reduction would fail), and Muon and SGD step on gradients averaged over both processes. BatchNorm
    normalises each rank's half batch on its own (SyncBatchNorm needs a GPU), so the weights differ a little
    from one process's; the accuracies agree as the DDP test of mlp asks."""
    flags = ("--tta", "none", "--augment", "none")
    ddp = fit_in_subprocess(tiny_archive, tmp_path, "ddp", "--devices", "2", "--strategy", "ddp",
                            "--batch-size", "30", *flags)
    single = fit_in_subprocess(tiny_archive, tmp_path, "single", "--devices", "1", "--batch-size", "60", *flags)
    ddp_metrics, single_metrics = (json.loads((run / "metrics.json").read_text()) for run in (ddp, single))
    assert ddp_metrics["device"].startswith("cpu x2") and ddp_metrics["epochs"] == single_metrics["epochs"] == 4
    assert ddp_metrics["test_acc"] == pytest.approx(single_metrics["test_acc"], abs=0.02)
    assert ddp_metrics["best_val_acc"] == pytest.approx(single_metrics["best_val_acc"], abs=0.02)
    assert single_metrics["test_acc"] > 0.5, single_metrics  # both learned (this tiny task is easy for it)
