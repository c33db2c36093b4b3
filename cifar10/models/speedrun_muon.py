"""airbench94_muon's method (Keller Jordan's CIFAR-10 speed record of 2025) on speedrun's network.

The same layers as `speedrun` (airbench94's: whitening patch conv, three conv groups, BN momentum 0.4,
eps 1e-12), with the changes airbench94_muon makes: the head's output is divided by its 256 inputs
(not 9) and its weights start at unit standard deviation; no lookahead average; and the optimisation
is Muon (see `cifar10.muon`) on the 3x3 conv filters, Nesterov SGD on the whitening bias, the BatchNorm
biases and the head, all with the learning rate falling linearly to 0 over the run, except the whitening
bias, whose rate falls to 0 over the first 3 epochs and stays there. 8 epochs at batch 2000, label
smoothing 0.2, shift-altflip augmentation, flip-shift TTA.

airbench94_muon sums the loss over the batch; here it is the mean, so its SGD learning rates are
multiplied by the batch size (2000) and its weight decay (2e-6 x 2000 per step, divided by each group's
rate) keeps the same decay per step. Muon's step does not depend on the gradient's scale. The recipe's
`lr` is Muon's (0.24), `momentum` Muon's (0.6); the SGD groups keep their published ratios to it, so
`--lr` scales them all.
"""

import torch
from torch import nn

from cifar10.models.registry import register
from cifar10.models.speedrun import WHITEN_BIAS_EPOCHS, WIDTHS, Scale, Speedrun
from cifar10.muon import MuonSGD
from cifar10.recipes import Recipe
from cifar10.schedules import lr_factor

BATCH = 2000
MUON_LR, MUON_MOMENTUM = 0.24, 0.6
SGD_MOMENTUM = 0.85
BIAS_LR, HEAD_LR = 0.053 * BATCH, 0.67 * BATCH  # airbench94_muon's per-example rates, for a mean loss
DECAY_PER_STEP = 2e-6 * BATCH

AIRBENCH94_MUON = Recipe(optimizer="muon", lr=MUON_LR, momentum=MUON_MOMENTUM, nesterov=True,
                         weight_decay=DECAY_PER_STEP / MUON_LR, schedule="linear", label_smoothing=0.2,
                         bias_lr_scale=BIAS_LR / MUON_LR, tta="flip-shift", batch_size=BATCH, max_epochs=8,
                         augment="shift-altflip", val_size=0)


@register("speedrun-muon", order=95,
          published="airbench94_muon: 94.01% with TTA in 8 epochs (mean of 200 runs, official images)",
          tutorial=AIRBENCH94_MUON,
          default=AIRBENCH94_MUON)
class SpeedrunMuon(Speedrun):
    def build_net(self) -> nn.Module:
        net = super().build_net()
        head = net[-2]
        with torch.no_grad():
            head.weight /= head.weight.std()
        net[-1] = Scale(1 / WIDTHS[-1])
        return net

    def on_before_optimizer_step(self, optimizer) -> None:
        pass  # the whitening bias stops through its schedule (rate 0 after 3 epochs), not by dropping its gradient

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        pass  # no lookahead

    def parameter_groups(self) -> list[dict]:
        """airbench94_muon's groups: whitening bias, BatchNorm biases, head (SGD), conv filters (Muon)."""
        hp, net = self.settings, self.net
        scale = hp.lr / MUON_LR  # --lr moves every group's rate with Muon's
        decay = hp.weight_decay * hp.lr  # per step, for the SGD groups
        bias_lr, head_lr = hp.lr * hp.bias_lr_scale, HEAD_LR * scale
        whiten_bias, head = net[0].bias, net[-2].weight
        norm_biases = [m.bias for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
        filters = [p for p in net.parameters() if p.ndim == 4 and p.requires_grad]
        return [
            {"params": [whiten_bias], "lr": bias_lr, "weight_decay": decay / bias_lr},
            {"params": norm_biases, "lr": bias_lr, "weight_decay": decay / bias_lr},
            {"params": [head], "lr": head_lr, "weight_decay": decay / head_lr},
            {"params": filters, "lr": hp.lr, "momentum": hp.momentum, "weight_decay": 0.0, "muon": True},
        ]

    def configure_optimizers(self):
        hp = self.settings
        if hp.optimizer != "muon":  # --optimizer sgd/adam/adamw: the groups every model has
            return super().configure_optimizers()
        total = int(self.trainer.estimated_stepping_batches)
        whiten_steps = max(1, round(total * WHITEN_BIAS_EPOCHS / self.trainer.max_epochs))
        opt = MuonSGD(self.parameter_groups(), lr=hp.lr, momentum=SGD_MOMENTUM, nesterov=True)
        run = lr_factor(hp.schedule, total)  # none: 1.0 throughout
        whiten = lr_factor("linear", whiten_steps)  # airbench94_muon's: to 0 over the first 3 epochs
        sched = torch.optim.lr_scheduler.LambdaLR(opt, [whiten, run, run, run])
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
