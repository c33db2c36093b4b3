"""Optimisers: the --optimizer registry, parameter groups, and the optimizer and schedule a run trains with.

OPTIMIZERS maps each name to a builder (parameter groups, hyper-parameters) -> torch optimizer.
`muon` has none here: Muon needs the model to say which of its weights Muon trains and which SGD does,
so a model that can (speedrun-muon) builds it in its own configure_optimizers (cifar10.muon).
"""

from collections.abc import Callable

import torch
from torch import nn

from cifar10.errors import UserError, look_up
from cifar10.schedules import constant, schedule_builder

Builder = Callable[[list[dict], object], torch.optim.Optimizer]  # (parameter groups, hyper-parameters)


def sgd(groups: list[dict], hp) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum, nesterov=hp.nesterov, weight_decay=hp.weight_decay)


def adam(groups: list[dict], hp) -> torch.optim.Optimizer:
    return torch.optim.Adam(groups, lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay)


def adamw(groups: list[dict], hp) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay)


def muon_needs_its_model(groups: list[dict], hp) -> torch.optim.Optimizer:
    raise UserError("the muon optimizer needs a model that says which of its weights Muon trains and which "
                    "SGD does (speedrun-muon); for this model choose sgd, adam or adamw.")


OPTIMIZERS: dict[str, Builder] = {"sgd": sgd, "adam": adam, "adamw": adamw, "muon": muon_needs_its_model}


def optimizer_builder(name: str) -> Builder:
    """The builder of optimizer `name`; a UserError naming the optimizers for an unknown one."""
    return look_up(OPTIMIZERS, name, "optimizer")


def parameter_groups(net: nn.Module, bias_lr_scale: float, lr: float, weight_decay: float) -> list[dict]:
    """Trainable parameters in optimizer groups: BatchNorm biases apart when their lr is scaled.

    Their weight decay is divided by the same factor, so the decay each step stays lr x weight_decay.
    """
    params = [p for p in net.parameters() if p.requires_grad]
    if bias_lr_scale == 1.0:
        return [{"params": params}]
    norm_biases = {id(m.bias) for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    biases = [p for p in params if id(p) in norm_biases]
    return [{"params": [p for p in params if id(p) not in norm_biases]},
            {"params": biases, "lr": lr * bias_lr_scale, "weight_decay": weight_decay / bias_lr_scale}]


def build_optimizer(hp, net: nn.Module, total_steps: float):
    """The optimizer the hyper-parameters name, with their schedule stepped per batch over total_steps.

    Returns what configure_optimizers returns (an optimizer, or a dict with the scheduler); the plain
    PyTorch loop of `cifar10.bench loop` builds the very same from it. Parameters with requires_grad
    False at this point (frozen ones) are left out; ones frozen later keep their place but get no step.
    The schedule is a LambdaLR whose function (not saved in checkpoints) knows the run's length, so a run
    resumed with more epochs follows the schedule of its new length from the step it stopped at.
    """
    make, schedule = optimizer_builder(hp.optimizer), schedule_builder(hp.schedule)
    opt = make(parameter_groups(net, hp.bias_lr_scale, hp.lr, hp.weight_decay), hp)
    if schedule is constant:  # no scheduler: its checkpoints hold no scheduler state, as they always have
        return opt
    if total_steps == float("inf"):
        raise UserError(f"the {hp.schedule} schedule needs a finite run: set max_epochs or max_steps.")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule(int(total_steps)))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def apply_hyperparameters(opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LambdaLR | None,
                          built: torch.optim.Optimizer | dict, step: int) -> None:
    """Give the optimizer and schedule in training the hyper-parameters of `built` (what configure_optimizers
    returns for the same parameters), at optimizer step `step`.

    Each parameter group takes the built group's values (learning rate, weight decay, momentum, betas,
    whatever that model's groups hold), the LambdaLR the built one's base_lrs (the peak values) and `step`
    as its step count (last_epoch), and each group's rate is base_lr x its lambda at `step`, LambdaLR.get_lr's
    own expression, so its next step continues the schedule of these settings and a fresh fit gets the very
    same floats (torch.optim docs: LRScheduler, LambdaLR). The state (momentum buffers, moments) is kept.
    """
    fresh_opt, fresh_sched = ((built["optimizer"], built["lr_scheduler"]["scheduler"]) if isinstance(built, dict)
                              else (built, None))
    for group, fresh in zip(opt.param_groups, fresh_opt.param_groups):
        group.update({key: value for key, value in fresh.items() if key != "params"})
    if sched is None or fresh_sched is None:  # no schedule: the rates as built
        return
    sched.base_lrs = list(fresh_sched.base_lrs)
    sched.last_epoch = step
    for group, base, factor in zip(opt.param_groups, sched.base_lrs, sched.lr_lambdas):
        group["lr"] = base * factor(step)
