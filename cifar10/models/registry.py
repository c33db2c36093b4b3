"""The model registry: each architecture's name mapped to its ClassifierModule subclass and its recipes.

An architecture module declares its layers, its published result and both recipes together with
@register; importing the module registers it (cifar10.models imports every architecture module).
Apart from the package's __init__, so the architecture modules it imports find `register` already
defined (the layout of timm's `_registry.py`).
"""

from dataclasses import dataclass, fields, replace

from cifar10.errors import UserError
from cifar10.models.base import DATA_HPARAMS, ClassifierModule
from cifar10.recipes import RECIPES, Recipe
from cifar10.settings import ModelSettings

LAST = 1000  # the order of a model that states none: after the others


@dataclass(frozen=True)
class ModelInfo:
    name: str
    cls: type[ClassifierModule]
    published: str  # the published result and recipe this architecture follows
    recipes: dict[str, Recipe]  # by recipe name: tutorial, default
    order: int = LAST  # where lists and --help show it; the built-in ones go from small nets to big


_REGISTRY: dict[str, ModelInfo] = {}


def register(name: str, published: str, *, tutorial: Recipe | None = None, default: Recipe | None = None,
             order: int = LAST):
    """Class decorator: make a ClassifierModule subclass available as `name`, with its two recipes.

    tutorial: the published source's training setup; default: ours. Models are listed by `order`, then name.
    """

    def add(cls: type[ClassifierModule]) -> type[ClassifierModule]:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} registered twice")
        recipes = {"tutorial": tutorial, "default": default}
        missing = [kind for kind, value in recipes.items() if not isinstance(value, Recipe)]
        if missing:
            raise UserError(f"model {name!r} ({cls.__module__}) is registered without its {' and '.join(missing)} "
                            f"recipe: pass {', '.join(f'{kind}=Recipe(...)' for kind in missing)} to @register.")
        for kind, value in recipes.items():
            value.check(f"the {kind} recipe of model {name!r} ({cls.__module__})")
        cls.model_name = name
        _REGISTRY[name] = ModelInfo(name, cls, published, recipes, order)
        return cls

    return add


def model_names() -> list[str]:
    """Every registered model, by order, then name."""
    return [info.name for info in sorted(_REGISTRY.values(), key=lambda info: (info.order, info.name))]


def model_info(name: str) -> ModelInfo:
    if name not in _REGISTRY:
        raise UserError(f"unknown model {name!r}: choose one of {', '.join(model_names())}.")
    return _REGISTRY[name]


def recipe(model: str, name: str = "default") -> dict:
    """The recipe `name` ('tutorial' or 'default') of `model`: the flat dict of the settings it sets (every other
    one keeps its default; `cifar10.fit_settings.recipe_settings` has them all)."""
    info = model_info(model)  # UserError for an unknown model
    if name not in RECIPES:
        raise UserError(f"unknown recipe {name!r}: choose one of {', '.join(RECIPES)}.")
    return info.recipes[name].as_settings()


def model_hparam_names(name: str) -> list[str]:
    """The hyper-parameters the model takes: its settings section's, and the data's statistics and classes."""
    return [f.name for f in fields(ModelSettings)] + list(DATA_HPARAMS)


def create_model(name: str, settings: ModelSettings | None = None, **hparams) -> ClassifierModule:
    """Build model `name` from its settings section (default: every field's default), with mean, std and
    class_names from the data. Keywords set single hyper-parameters instead (`create_model("mlp", lr=0.05)`),
    and a checkpoint's hyper_parameters may be passed back as they are: their "model" entry is accepted when it
    names this model."""
    cls = model_info(name).cls
    if hparams.pop("model", name) != name:
        raise UserError(f"the hyperparameters describe another model than {name!r}: pass the matching name.")
    unknown = sorted(set(hparams) - set(model_hparam_names(name)))
    if unknown:
        raise UserError(f"model {name!r} does not take {', '.join(unknown)}: "
                        f"its hyperparameters are {', '.join(model_hparam_names(name))}.")
    data = {k: hparams.pop(k) for k in DATA_HPARAMS if k in hparams}
    return cls(replace(settings or ModelSettings(), **hparams), **data)
