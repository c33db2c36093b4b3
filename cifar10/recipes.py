"""Training recipes: `tutorial` reproduces the published setup, `default` is ours.

Each model declares both next to its layers, in its file in cifar10/models/ (`@register(...,
tutorial=Recipe(...), default=ours(...))`); `cifar10.models.recipe(model, name)` reads them from the registry.
A recipe is a partial override of the settings (cifar10.settings): it names only the settings it sets,
among those of the "recipe settings" group (the optimisation, the data's batch size, augmentation,
normalisation and validation split, the Trainer's max_epochs; `cifar10.settings.RECIPE_KEYS`), and every
other one keeps its field's default. A key that is no such setting is refused when the model registers.
Tutorial recipes take every value the source states (each model file says which they are);
unstated ones are the source's usual choice and are marked "unstated" beside them. They add no LR
schedule the source does not mention. Default recipes use a one-cycle schedule, crop-flip and SGD with
Nesterov momentum or AdamW, and aim to beat the published accuracy in fewer epochs.
"""

from typing import Any

from cifar10.errors import UserError
from cifar10.settings import RECIPE_KEYS, problems

RECIPES = ("tutorial", "default")  # the names `--recipe` takes; every model declares both


class Recipe:
    """The settings a recipe sets, by flag name (`Recipe(lr=0.05, batch_size=128)`); no others."""

    def __init__(self, **settings: Any) -> None:
        # lists, not tuples: the flat settings hold betas as checkpoints and YAML do
        self.settings = {key: list(value) if isinstance(value, tuple) else value for key, value in settings.items()}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Recipe) and self.settings == other.settings

    def __repr__(self) -> str:
        return f"Recipe({', '.join(f'{key}={value!r}' for key, value in self.settings.items())})"

    def as_settings(self) -> dict[str, Any]:
        """The settings it sets, as a flat dict (a copy)."""
        return {key: list(value) if isinstance(value, list) else value for key, value in self.settings.items()}

    def check(self, owner: str) -> None:
        """UserError when it sets a key no recipe may set, or a value its setting's check refuses."""
        unknown = [key for key in self.settings if key not in RECIPE_KEYS]
        if unknown:
            raise UserError(f"{owner} sets {', '.join(map(repr, unknown))}, which a recipe cannot set: it sets "
                            f"only some of {', '.join(RECIPE_KEYS)}. Fix the key in the model's @register.")
        wrong = problems(self.settings)
        if wrong:
            raise UserError(f"{owner} has bad values: {'; '.join(wrong)}. Fix them in the model's @register.")


# Ours: one-cycle LR, crop-flip, Nesterov SGD (AdamW for the Adam-trained, BN-less nets).
def ours(**overrides: Any) -> Recipe:
    return Recipe(**{"nesterov": True, "schedule": "onecycle", **overrides})
