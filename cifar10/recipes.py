"""Training recipes: `tutorial` reproduces the published setup, `default` is ours.

Each model declares both next to its layers, in its file in cifar10/models/ (`@register(...,
tutorial=Recipe(...), default=ours(...))`); `recipe(model, name)` reads them from the registry.
A recipe is a flat dict: the keys ClassifierModule takes (optimizer ... label_smoothing), the data
module's (batch_size, augment, normalize, val_size) and the Trainer's max_epochs.
Tutorial recipes take every value the source states (each model file says which they are);
unstated ones are the source's usual choice and are marked "unstated" beside them. They add no LR
schedule the source does not mention. Default recipes use a one-cycle schedule, crop-flip and SGD with
Nesterov momentum or AdamW, and aim to beat the published accuracy in fewer epochs.

The model files import Recipe from here; `cifar10.models.recipe(model, name)` looks a model's up.
"""

from dataclasses import asdict, dataclass

RECIPES = ("tutorial", "default")  # the names `--recipe` takes; every model declares both


@dataclass(frozen=True)
class Recipe:
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "none"
    label_smoothing: float = 0.0
    bias_lr_scale: float = 1.0  # BatchNorm biases train at this multiple of lr (same decay per step)
    tta: str = "none"  # test-time augmentation of the test accuracy: none, flip, flip-shift
    batch_size: int = 256
    max_epochs: int = 30
    augment: str = "crop-flip"
    normalize: str = "dataset"
    val_size: int | float = 5000  # images held out of train, or a fraction; 0 validates on test

    def as_settings(self) -> dict:
        """The recipe as a plain dict of settings (betas as a list)."""
        values = asdict(self)
        values["betas"] = list(values["betas"])
        return values


# Ours: one-cycle LR, crop-flip, Nesterov SGD (AdamW for the Adam-trained, BN-less nets).
def ours(**overrides) -> Recipe:
    return Recipe(**{"nesterov": True, "schedule": "onecycle", **overrides})

