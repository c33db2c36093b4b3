"""A small fast network in the style of the CIFAR-10 speed records (Keller Jordan's airbench94).

Layout as airbench94 publishes it (94% in about 10 epochs with its own training tricks): a 2x2 patch
conv to 24 channels without BN, initialised to whiten the input patches (the 12 eigen-directions of
the patch covariance, with both signs) and kept frozen; GELU; three blocks of
conv3x3-maxpool2-BN-GELU, conv3x3-BN-GELU with widths 64/256/256 (31 -> 15 -> 7 -> 3 pixels);
max-pool 3; linear 256-10 without bias, its output scaled by a fixed 1/9.
As in airbench: bias-free convs whose first filters start as identities (dirac), BN with frozen unit
weights, eps 1e-12 and momentum 0.4 (PyTorch's convention). The whitening comes from the first 5,000
training images when the trainer's data module offers them (`train_images`);
otherwise the patch conv keeps its random start, which still trains (tests do this).

Training tricks of airbench94 that belong to the model: the patch conv's bias trains for the first 3
epochs only (its gradient is dropped before later steps, see on_before_optimizer_step), and every 5 steps
the weights move to a lookahead average of themselves (see Lookahead).
The recipe gives the rest: triangle schedule, BN-bias lr x64, shift-altflip, flip-shift TTA.
"""

from functools import cached_property

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cifar10.models.base import ClassifierModule
from cifar10.models.registry import register
from cifar10.recipes import Recipe

WIDTHS = (64, 256, 256)
WHITEN_CHANNELS = 24  # 2 signs x 3 colours x 2 x 2 patch
WHITEN_IMAGES = 5000
WHITEN_BIAS_EPOCHS = 3  # the patch conv's bias trains this many epochs, then stays
LOOKAHEAD_EVERY, LOOKAHEAD_DECAY = 5, 0.95 ** 5

# airbench94's settings, converted to a mean loss: its lr 11.5 and wd 0.0153 are per 1024 summed examples
# and divided by 1 + 1/(1 - momentum), giving lr 1.5 and a decay of 0.0153/7.67 = 2.0e-3 = lr x 1.33e-3
# per step. It trains on all 50,000 images for 9.9 epochs (we do 10) and reports accuracy with TTA.
AIRBENCH94 = Recipe(lr=1.5, momentum=0.85, nesterov=True, weight_decay=1.33e-3, schedule="triangle",
                    label_smoothing=0.2, bias_lr_scale=64.0, tta="flip-shift", batch_size=1024, max_epochs=10,
                    augment="shift-altflip", val_size=0)


class Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        return x * self.factor


def batch_norm(channels: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels, eps=1e-12, momentum=0.4)
    bn.weight.requires_grad_(False)
    return bn


def conv(c_in: int, c_out: int) -> nn.Conv2d:
    layer = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(layer.weight[:c_in])
    return layer


def conv_group(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(conv(c_in, c_out), nn.MaxPool2d(2), batch_norm(c_out), nn.GELU(),
                         conv(c_out, c_out), batch_norm(c_out), nn.GELU())


@torch.no_grad()
def whiten_(layer: nn.Conv2d, images: Tensor, eps: float = 5e-4) -> None:
    """Set a 2x2 conv's filters to +/- the whitening transform of the images' 2x2 patches."""
    patches = F.unfold(images.float(), layer.kernel_size).transpose(1, 2).reshape(-1, layer.weight[0].numel())
    eigenvalues, eigenvectors = torch.linalg.eigh(patches.double().T.cov())
    filters = (eigenvectors.T / (eigenvalues + eps).sqrt()[:, None]).float().view(-1, *layer.weight.shape[1:])
    layer.weight.copy_(torch.cat([filters, -filters]))
    layer.bias.zero_()


def lookahead_decay(step: int, total_steps: float) -> float | None:
    """The decay of the lookahead update after optimizer step `step`, or None for no update (airbench94's rule).

    Every LOOKAHEAD_EVERY steps the decay grows with the cube of the progress; after the run's last
    step the weights go to the average (decay 1: the average stays, the weights take it).
    """
    if step % LOOKAHEAD_EVERY == 0:
        return LOOKAHEAD_DECAY * (step / total_steps) ** 3
    return 1.0 if step >= total_steps else None


class Lookahead:
    """An exponential average of the weights (and BN statistics), copied back into the net at each update.

    Unlike an EMA kept beside the model (Lightning's WeightAveraging), training goes on from the
    average, which is how airbench94 uses it: the decay starts near 0 and grows to 0.95^5 with the
    cube of the run's progress, so the net moves fast early and averages strongly late.
    """

    def __init__(self) -> None:
        self.average: dict[str, Tensor] | None = None

    @torch.no_grad()
    def update(self, net: nn.Module, decay: float) -> None:
        """Move the average toward the weights by 1 - decay, then set the weights to it (the first call starts it)."""
        weights = {k: v for k, v in net.state_dict().items() if v.is_floating_point()}
        if self.average is None:
            self.average = {k: v.clone() for k, v in weights.items()}
            return
        for name, value in weights.items():
            value.copy_(self.average[name].lerp_(value, 1 - decay))


@register("speedrun", order=90,
          published="airbench94's net and training: 94.0% with TTA in 9.9 epochs (official images)",
          tutorial=AIRBENCH94,
          default=AIRBENCH94)  # ours is airbench94's too, until tuned on a GPU
class Speedrun(ClassifierModule):
    def build_net(self) -> nn.Module:
        whiten = nn.Conv2d(3, WHITEN_CHANNELS, 2)
        whiten.weight.requires_grad_(False)
        return nn.Sequential(
            whiten, nn.GELU(),
            conv_group(WHITEN_CHANNELS, WIDTHS[0]), conv_group(WIDTHS[0], WIDTHS[1]), conv_group(WIDTHS[1], WIDTHS[2]),
            nn.MaxPool2d(3), nn.Flatten(),
            nn.Linear(WIDTHS[2], 10, bias=False), Scale(1 / 9),
        )

    @cached_property
    def lookahead(self) -> Lookahead:
        return Lookahead()

    def on_before_optimizer_step(self, optimizer) -> None:
        # The bias's gradient is computed (and all-reduced under DDP) every step, then dropped before the
        # step once it has trained its epochs: SGD and Adam skip a parameter whose grad is None, weight
        # decay and momentum included, as airbench94's detached bias. Flipping requires_grad instead would
        # change the graph: DDP (find_unused_parameters=False) then waits forever for that gradient
        # ("Expected to have finished reduction in the prior iteration"), and torch.compile recompiles for
        # the new grad mode. Decided per step from current_epoch, so a resumed run drops it the same way.
        if self.current_epoch >= WHITEN_BIAS_EPOCHS:
            self.net[0].bias.grad = None

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        decay = lookahead_decay(self.global_step, self.trainer.estimated_stepping_batches)
        if decay is not None:
            self.lookahead.update(self.net, decay)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["lookahead"] = self.lookahead.average

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.lookahead.average = checkpoint.get("lookahead")

    def on_train_start(self) -> None:  # a resumed average goes where the weights now are
        super().on_train_start()
        if self.lookahead.average is not None:
            self.lookahead.average = {k: v.to(self.device) for k, v in self.lookahead.average.items()}

    def on_fit_start(self) -> None:
        data = self.trainer.datamodule
        fresh = self.trainer.ckpt_path is None
        if fresh and getattr(data, "train_images", None) is not None:
            images = self.normalize(data.train_images[:WHITEN_IMAGES].to(self.device))
            whiten_(self.net[0], images)
            self.share_whitening()

    @torch.no_grad()
    def share_whitening(self) -> None:
        """Every rank takes rank 0's whitening filters: the eigenvectors' signs (and last bits) are not
        guaranteed equal across processes, and DDP broadcast the weights when it wrapped the model, before
        on_fit_start. Sent as a CPU tensor: the strategy pickles it, and a CUDA one would arrive on rank 0's
        device. Under one process the strategy's broadcast returns the tensor itself."""
        layer = self.net[0]
        layer.weight.copy_(self.trainer.strategy.broadcast(layer.weight.detach().cpu(), src=0))
