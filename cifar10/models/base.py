"""ClassifierModule: the training and evaluation logic every architecture shares.

Its optimizer and schedule come from cifar10.optimizers (and cifar10.schedules), its test-time
augmentation from cifar10.tta, its input normalisation from cifar10.data.normalization.
"""

from collections.abc import Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from cifar10.data import CLASSES
from cifar10.data.normalization import HALF, Normalize
from cifar10.lightning_internals import HOOK_NAME_ATTR
from cifar10.optimizers import apply_hyperparameters, build_optimizer, optimizer_builder
from cifar10.schedules import schedule_builder
from cifar10.settings import ModelSettings, plain_values
from cifar10.tta import augmented_logits, tta_mode

# 2: the learning-rate schedule is a LambdaLR (1: OneCycleLR or CosineAnnealingLR, whose saved state a
# LambdaLR cannot load: format-1 checkpoints are read by evaluate, predict and export, but not resumed)
CHECKPOINT_FORMAT = 2
MAX_MISCLASSIFIED = 36  # test images kept for the misclassified grid
DATA_HPARAMS = ("mean", "std", "class_names")  # the hyper-parameters the data gives, beside the settings'


class Misclassified:
    """The first `limit` wrong predictions of a pass over (uint8) batches, gathered on the CPU.

    Each update costs a host synchronisation until `limit` images are kept, and nothing after.
    """

    def __init__(self, limit: int = MAX_MISCLASSIFIED) -> None:
        self.limit, self.count = limit, 0
        self.parts: list[tuple[Tensor, Tensor, Tensor]] = []

    def update(self, images: Tensor, preds: Tensor, targets: Tensor) -> None:
        if self.count < self.limit:
            wrong = (preds != targets).nonzero().flatten()[:self.limit - self.count]
            self.parts.append((images[wrong].cpu(), preds[wrong].cpu(), targets[wrong].cpu()))
            self.count += len(wrong)

    def tensors(self) -> tuple[Tensor, Tensor, Tensor]:
        """(images, predictions, targets) of the kept ones, in the order seen."""
        if not self.parts:
            return (torch.zeros(0, 3, 32, 32, dtype=torch.uint8), torch.zeros(0, dtype=torch.long),
                    torch.zeros(0, dtype=torch.long))
        return tuple(torch.cat(parts) for parts in zip(*self.parts))


class ClassifierModule(L.LightningModule):
    """A CIFAR-10 classifier: subclasses only say which layers it has (`build_net`).

    It owns its input: forward takes uint8 images (B, 3, 32, 32), as the data module batches them, and
    normalises them with the mean and std of its hyper-parameters (float pixels in [0, 1] work too); it
    returns logits (B, num_classes). Label smoothing applies to the training loss only, so val/test losses
    stay comparable across recipes.
    """

    model_name: str = ""  # set by @register

    def __init__(self, settings: ModelSettings | None = None, mean: Sequence[float] = HALF[0],
                 std: Sequence[float] = HALF[1], class_names: Sequence[str] = CLASSES) -> None:
        """settings: the model section (default: every field's default); mean, std, class_names: the data's."""
        super().__init__()
        s = settings or ModelSettings()
        for look_up, name in ((optimizer_builder, s.optimizer), (schedule_builder, s.schedule), (tta_mode, s.tta)):
            look_up(name)  # an unknown name: a UserError naming the choices, before anything is built
        # Plain lists of floats/str only: torch.load(weights_only=True) and yaml.safe_load read them back.
        self.save_hyperparameters({"model": self.model_name} | plain_values(s) | {
            "mean": [float(m) for m in mean], "std": [float(v) for v in std],
            "class_names": [str(c) for c in class_names],
        }, logger=False)  # the loggers get the settings view instead (fit_flow.logged_params)
        self.example_input_array = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
        self.normalize = Normalize(mean, std)
        self.net = self.build_net()
        if s.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        n = len(class_names)  # "micro": the share of images classified right, not a mean over classes
        self.train_sums: Tensor | None = None  # loss x images, images right: the epoch so far
        self.train_images = 0
        checked = {"validate_args": False}  # our own logits and labels: no per-batch input checks (host syncs on a GPU)
        self.val_acc = MulticlassAccuracy(num_classes=n, average="micro", **checked)
        self.test_acc = MulticlassAccuracy(num_classes=n, average="micro", **checked)
        self.test_per_class = MulticlassAccuracy(num_classes=n, average=None, **checked)
        self.test_confusion = MulticlassConfusionMatrix(num_classes=n, **checked)
        self.test_results: dict = {}
        self.test_misclassified = Misclassified()

    @property
    def settings(self) -> ModelSettings:
        """The model section, from the saved hyper-parameters (the one record of them, which evaluate's --tta
        changes too)."""
        return ModelSettings.from_hparams(self.hparams)

    def build_net(self) -> nn.Module:
        raise NotImplementedError("each architecture defines its layers in build_net")

    def __setattr__(self, name: str, value: object) -> None:
        # Lightning sets _current_fx_name (a str or None) around every hook it calls on the module, about
        # 38 times a training step; nn.Module's checks for parameters and submodules cost ~1.9 us each,
        # a plain attribute ~0.1 us.
        if name == HOOK_NAME_ATTR:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, images: Tensor) -> Tensor:
        return self.classify(self.normalize(images))

    def classify(self, x: Tensor) -> Tensor:
        """Logits of normalised images (what `normalize` makes of pixels)."""
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.hparams.label_smoothing)
        self.log_training(loss, logits, labels, batch_idx)
        return loss

    def log_training(self, loss: Tensor, logits: Tensor, labels: Tensor, batch_idx: int) -> None:
        """train/loss_step at the steps Lightning writes to the logger; train/loss_epoch and train/acc once,
        at the epoch's last batch, from sums kept on the device.

        Not torchmetrics and not self.log every step: on the 2-core CPU a MulticlassAccuracy forward costs
        about 0.3 ms and each self.log call about 0.2 ms, against about 0.03 ms for these sums
        (docs/benchmarks.md, per-step overhead).
        """
        with torch.no_grad():  # the images are counted on the host: the device keeps only what it computes
            step = torch.stack([loss.float() * len(labels), (logits.argmax(1) == labels).sum(dtype=torch.float32)])
            self.train_sums = step if self.train_sums is None else self.train_sums + step
            self.train_images += len(labels)
        trainer = self.trainer
        if (self.global_step + 1) % trainer.log_every_n_steps == 0:  # Lightning's own test for writing logs
            self.log("train/loss_step", loss.detach(), prog_bar=True)
        if batch_idx + 1 == trainer.num_training_batches:
            (loss_sum, correct), images = self.train_sums, self.train_images
            self.log_dict({"train/loss_epoch": loss_sum / images, "train/acc": correct / images}, on_step=False,
                          on_epoch=True, prog_bar=True, sync_dist=True)
            self.train_sums, self.train_images = None, 0

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self(images)
        self.val_acc.update(logits, labels)
        self.log("val/loss", F.cross_entropy(logits, labels), on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("val/acc", self.val_acc, on_epoch=True, prog_bar=True)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = augmented_logits(self.classify, self.normalize(images), self.hparams.tta)
        self.test_acc.update(logits, labels)
        self.test_per_class.update(logits, labels)
        self.test_confusion.update(logits, labels)
        self.test_misclassified.update(images, logits.argmax(1), labels)
        self.log("test/loss", F.cross_entropy(logits, labels), on_epoch=True, sync_dist=True)
        self.log("test/acc", self.test_acc, on_epoch=True)

    def on_test_epoch_end(self) -> None:
        per_class = self.test_per_class.compute().tolist()
        images, preds, targets = self.test_misclassified.tensors()
        self.test_results = {
            "acc": float(self.test_acc.compute()),
            "per_class_acc": dict(zip(self.hparams.class_names, per_class)),
            "confusion": self.test_confusion.compute().tolist(),
            "misclassified": {"images": images, "preds": preds, "targets": targets},
        }
        self.test_per_class.reset()
        self.test_confusion.reset()
        self.test_misclassified = Misclassified()

    def predict_step(self, batch: Tensor | tuple[Tensor, ...], batch_idx: int) -> Tensor:
        """Logits for a batch of images, or of (images, labels) as the data module yields them."""
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(images)

    def configure_optimizers(self):
        return build_optimizer(self.settings, self.net, self.trainer.estimated_stepping_batches)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["cifar10"] = {"model": self.model_name, "format": CHECKPOINT_FORMAT}

    def on_train_start(self) -> None:
        # A resumed fit: Lightning has just put back the optimizer's and the schedule's saved state (their
        # param_groups and base_lrs) over what configure_optimizers built from the hyper-parameters of today.
        # Make them today's again, so a setting changed on resume trains as recorded. A fresh fit is unchanged.
        configs = self.trainer.lr_scheduler_configs
        apply_hyperparameters(self.trainer.optimizers[0], configs[0].scheduler if configs else None,
                              self.configure_optimizers(), self.trainer.global_step)
