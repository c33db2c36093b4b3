"""Muon for conv filters and Nesterov SGD for the rest, in one optimizer that routes parameter groups.

Muon (Keller Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024) keeps a
momentum of the gradient and steps along its orthogonalisation: the matrix U V^T of its SVD U S V^T,
approximated by a few steps of a quintic Newton-Schulz iteration whose coefficients (3.4445, -4.7750,
2.0315) push every singular value towards 1 fast, to roughly 0.5-1.5 rather than exactly 1. The record
CIFAR-10 recipe (airbench94_muon) uses it on the 3x3 conv filters, viewed as (out channels, in x 3 x 3)
matrices, with each filter bank's weights first scaled back to a norm of sqrt(out channels), 3 iterations
and no weight decay; everything else (biases, the head) trains with Nesterov SGD.

`torch.optim.Muon` takes only 2-D parameters, and Lightning's automatic optimisation steps one optimizer
per training step, so both updates live here: a group with `"muon": True` gets the Muon step, any other
the PyTorch SGD step (`torch.optim.sgd.sgd`, the functional form `torch.optim.SGD` itself runs). The state
(momentum buffers) is an ordinary optimizer state, so checkpoints resume it and LR schedulers scale
each group's `lr` as usual.
"""

import torch
from torch import Tensor
from torch.optim.sgd import sgd

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(update: Tensor, steps: int = 3, eps: float = 1e-7, dtype: torch.dtype | None = None) -> Tensor:
    """The orthogonalisation of a 2-D `update` by `steps` quintic Newton-Schulz iterations, in `dtype`
    (default: bfloat16 on a GPU, as the record does, float32 elsewhere, where bfloat16 matmuls are slow)."""
    if dtype is None:
        dtype = torch.bfloat16 if update.is_cuda else torch.float32
    a, b, c = NS_COEFFICIENTS
    x = update.to(dtype)
    wide = x.size(0) <= x.size(1)
    x = x if wide else x.T  # iterate on the smaller Gram matrix
    x = x / (x.norm() + eps)  # the Frobenius norm bounds the largest singular value: it starts <= 1
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x if wide else x.T


class MuonSGD(torch.optim.Optimizer):
    """Muon on the groups marked `"muon": True`, Nesterov SGD (PyTorch's) on the others.

    Muon groups take `lr`, `momentum`, `nesterov` and `ns_steps`; SGD groups also `weight_decay`.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, nesterov: bool = True, weight_decay: float = 0.0,
                 ns_steps: int = 3) -> None:
        defaults = {"lr": lr, "momentum": momentum, "nesterov": nesterov, "weight_decay": weight_decay,
                    "ns_steps": ns_steps, "muon": False}
        super().__init__(params, defaults)
        for group in self.param_groups:
            if group["muon"] and group["weight_decay"]:
                raise ValueError("Muon groups take no weight decay here (the record's Muon has none)")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                (self.muon_step if group["muon"] else self.sgd_step)(group, params)
        return loss

    def buffers(self, params: list[Tensor]) -> list[Tensor | None]:
        return [self.state[p].get("momentum_buffer") for p in params]

    def sgd_step(self, group: dict, params: list[Tensor]) -> None:
        buffers = self.buffers(params)
        sgd(params, [p.grad for p in params], buffers, weight_decay=group["weight_decay"],
            momentum=group["momentum"], lr=group["lr"], dampening=0.0, nesterov=group["nesterov"], maximize=False)
        for p, buffer in zip(params, buffers):  # sgd creates the buffers of a first step in the list
            self.state[p]["momentum_buffer"] = buffer

    def muon_step(self, group: dict, params: list[Tensor]) -> None:
        momentum = group["momentum"]
        for p in params:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p.grad)
            buffer = state["momentum_buffer"]
            buffer.mul_(momentum).add_(p.grad)
            update = p.grad.add(buffer, alpha=momentum) if group["nesterov"] else buffer
            p.mul_(len(p) ** 0.5 / p.norm())  # each filter bank back to norm sqrt(out channels)
            ortho = newton_schulz(update.reshape(len(update), -1), group["ns_steps"])
            p.add_(ortho.view_as(p).to(p.dtype), alpha=-group["lr"])
