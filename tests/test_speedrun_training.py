"""airbench94's training tricks: optimizer groups, the triangle schedule, lookahead, the whitening bias,
test-time augmentation, and an interrupted speedrun run that resumes exactly."""

import json

import pytest
import torch
import torch.nn.functional as F
from test_resume import InterruptAt, tiny_fit_args

from cifar10.fit import main
from cifar10.models import create_model
from cifar10.models.speedrun import LOOKAHEAD_DECAY, Lookahead, lookahead_decay
from cifar10.optimizers import build_optimizer
from cifar10.settings import ModelSettings
from cifar10.tta import augmented_logits


def hparams(**overrides) -> ModelSettings:
    values = dict(optimizer="sgd", lr=1.5, momentum=0.85, nesterov=True, weight_decay=1e-3, betas=(0.9, 0.999),
                  schedule="triangle", bias_lr_scale=64.0)
    return ModelSettings(**{**values, **overrides})


def test_batchnorm_biases_train_at_a_scaled_lr_with_the_same_decay_per_step():
    net = create_model("speedrun").net
    opt = build_optimizer(hparams(schedule="none"), net, 100)
    others, biases = opt.param_groups
    bn_biases = [m.bias for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert [id(p) for p in biases["params"]] == [id(p) for p in bn_biases]
    assert biases["lr"] == 64 * 1.5 and others["lr"] == 1.5
    assert biases["lr"] * biases["weight_decay"] == pytest.approx(others["lr"] * others["weight_decay"])
    trainable = {id(p) for p in net.parameters() if p.requires_grad}
    assert {id(p) for g in opt.param_groups for p in g["params"]} == trainable
    assert id(net[0].weight) not in trainable  # the whitening filters stay as computed


def test_one_group_without_scaling():
    opt = build_optimizer(hparams(schedule="none", bias_lr_scale=1.0), create_model("speedrun").net, 100)
    assert len(opt.param_groups) == 1


def test_triangle_schedule_rises_from_a_fifth_to_the_peak_at_23_percent_then_falls_to_7_percent():
    built = build_optimizer(hparams(), create_model("speedrun").net, 1000)
    opt, sched = built["optimizer"], built["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(1000):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    lrs = torch.tensor(lrs) / torch.tensor([1.5, 96.0])  # both groups follow the same shape
    assert torch.allclose(lrs[:, 0], lrs[:, 1])
    assert lrs[0, 0] == pytest.approx(0.2) and lrs[:, 0].max() == pytest.approx(1.0, abs=1e-3)
    assert int(lrs[:, 0].argmax()) in (228, 229, 230) and lrs[-1, 0] == pytest.approx(0.07, abs=1e-3)
    assert lrs[100, 0] == pytest.approx(0.2 + 0.8 * 100 / 229, abs=2e-3)  # linear


def test_lookahead_moves_the_average_then_sets_the_weights_to_it():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    lookahead = Lookahead()
    lookahead.update(net, 0.5)  # the first call only starts the average
    start = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        net[0].weight.add_(1.0)
    lookahead.update(net, 0.75)
    assert torch.allclose(net[0].weight, start["0.weight"] + 0.25)
    assert torch.equal(lookahead.average["0.weight"], net[0].weight)
    assert "1.num_batches_tracked" not in lookahead.average  # integer buffers are left alone


def test_lookahead_every_5_steps_with_a_cubic_decay_and_to_the_average_after_the_last_step():
    """airbench94's rule for its 476 steps: updates at 5, 10, ..., 475, and the average taken up after 476."""
    assert lookahead_decay(5, 476) == pytest.approx(LOOKAHEAD_DECAY * (5 / 476) ** 3)
    assert lookahead_decay(475, 476) == pytest.approx(0.95 ** 5 * (475 / 476) ** 3)
    assert [s for s in range(1, 477) if lookahead_decay(s, 476) is not None][-3:] == [470, 475, 476]
    assert lookahead_decay(476, 476) == 1.0 and lookahead_decay(49, 476) is None  # not at epoch ends
    assert lookahead_decay(490, 490) == pytest.approx(LOOKAHEAD_DECAY)  # a last step on the beat: its own update


def test_test_time_augmentation_modes():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(10))
    x = torch.randn(5, 3, 8, 8)
    with torch.no_grad():
        plain = model(x)
        mirrored = (plain + model(x.flip(-1))) / 2
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        up_left, down_right = padded[..., 0:8, 0:8], padded[..., 2:10, 2:10]
        shifted = (model(up_left) + model(up_left.flip(-1)) + model(down_right) + model(down_right.flip(-1))) / 4
        assert torch.equal(augmented_logits(model, x, "none"), plain)
        assert torch.allclose(augmented_logits(model, x, "flip"), mirrored)
        assert torch.allclose(augmented_logits(model, x, "flip-shift"), (mirrored + shifted) / 2, atol=1e-6)
        assert not torch.allclose(mirrored, plain)


def speedrun_args(archive, data, logdir, *extra: str, model: str = "speedrun") -> list[str]:
    """5 epochs of 5 steps of `model` (speedrun, or a model built on it) on the tiny archive."""
    args = tiny_fit_args(archive, data, logdir, "--max-epochs", "5", "--limit-train-batches", "5", *extra)
    return [a if a != "lenet" else model for a in args]


@pytest.mark.slow
def test_speedrun_interrupted_mid_epoch_with_lookahead_ends_like_an_uninterrupted_one(tiny_archive, tmp_path):
    """5 steps an epoch, a lookahead update at each epoch's end; Ctrl-C in step 22, saved after it, between two updates."""
    data = tmp_path / "data"
    assert main(speedrun_args(tiny_archive, data, tmp_path / "straight")) == 0
    assert main(speedrun_args(tiny_archive, data, tmp_path / "split"), callbacks=[InterruptAt(epoch=4, batch=2)]) == 130
    interrupted = torch.load(tmp_path / "split" / "speedrun" / "version_0" / "checkpoints" / "last.ckpt",
                             weights_only=True)
    assert interrupted["global_step"] == 23 and interrupted["lookahead"] is not None
    assert main([*speedrun_args(tiny_archive, data, tmp_path / "split"), "--ckpt-path", "last"]) == 0

    final = {}
    for name in ("straight", "split"):
        run = tmp_path / name / "speedrun" / "version_0"
        ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
        final[name] = ckpt, json.loads((run / "metrics.json").read_text())
    (a, metrics_a), (b, metrics_b) = final["straight"], final["split"]
    assert metrics_a["test_acc"] == metrics_b["test_acc"]
    for key, value in a["state_dict"].items():
        assert torch.allclose(value, b["state_dict"][key], atol=1e-6), key
    # the run's last step leaves the weights at the average; the whitening bias trained 3 epochs, then stayed
    assert all(torch.equal(a["lookahead"][k], a["state_dict"][f"net.{k}"]) for k in a["lookahead"])
    bias = a["state_dict"]["net.0.bias"]
    assert bias.ne(0).any() and bias.equal(interrupted["state_dict"]["net.0.bias"])


def test_test_time_augmentation_averages_bf16_logits_in_float32():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10)).to(torch.bfloat16)
    model = lambda x: net(x.to(torch.bfloat16))  # noqa: E731 (what autocast hands back: bf16 logits)
    x = torch.randn(16, 3, 8, 8)
    for tta in ("flip", "flip-shift"):
        logits = augmented_logits(model, x, tta)
        assert logits.dtype == torch.float32, tta
    expected = (model(x).float() + model(x.flip(-1)).float()) / 2
    assert torch.equal(augmented_logits(model, x, "flip"), expected)


class CountingBackend:
    """A torch.compile backend that runs the graphs eagerly and counts how many it was given."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, graph_module, example_inputs):
        self.graphs += 1
        return graph_module.forward


@pytest.mark.slow
def test_a_compiled_speedrun_run_compiles_once_for_training_and_once_for_evaluation(tiny_archive, tmp_path,
                                                                                     monkeypatch):
    """5 epochs, past the whitening bias's last one; every batch the same size (250 + 50 + 100 images in 50s)."""
    backend, compile_module = CountingBackend(), torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compile_module(self, backend=backend))
    torch._dynamo.reset()
    args = speedrun_args(tiny_archive, tmp_path / "data", tmp_path / "logs", "--compile", "--batch-size", "50")
    try:
        assert main(args) == 0
    finally:
        torch._dynamo.reset()
    assert backend.graphs == 2
