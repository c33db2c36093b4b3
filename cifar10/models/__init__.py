"""Registry of CIFAR-10 architectures: each name maps to a ClassifierModule subclass."""

import inspect
from dataclasses import dataclass

from cifar10.errors import UserError
from cifar10.models.base import ClassifierModule


@dataclass(frozen=True)
class ModelInfo:
    name: str
    cls: type[ClassifierModule]
    published: str  # the published result and recipe this architecture follows


_REGISTRY: dict[str, ModelInfo] = {}


def register(name: str, published: str):
    """Class decorator: make a ClassifierModule subclass available as `name`."""

    def add(cls: type[ClassifierModule]) -> type[ClassifierModule]:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} registered twice")
        cls.model_name = name
        _REGISTRY[name] = ModelInfo(name, cls, published)
        return cls

    return add


def model_names() -> list[str]:
    return list(_REGISTRY)


def model_info(name: str) -> ModelInfo:
    if name not in _REGISTRY:
        raise UserError(f"unknown model {name!r}: choose one of {', '.join(_REGISTRY)}.")
    return _REGISTRY[name]


def model_hparam_names(name: str) -> list[str]:
    """The keyword arguments the model's constructor takes."""
    return [p for p in inspect.signature(model_info(name).cls).parameters if p not in ("args", "kwargs")]


def create_model(name: str, **hparams) -> ClassifierModule:
    """Build model `name`. A checkpoint's hyper_parameters may be passed back as they are:
    their "model" entry is accepted when it names this model."""
    cls = model_info(name).cls
    if hparams.pop("model", name) != name:
        raise UserError(f"the hyperparameters describe another model than {name!r}: pass the matching name.")
    unknown = sorted(set(hparams) - set(model_hparam_names(name)))
    if unknown:
        raise UserError(f"model {name!r} does not take {', '.join(unknown)}: "
                        f"its hyperparameters are {', '.join(model_hparam_names(name))}.")
    return cls(**hparams)


# Importing each architecture registers it; the order here is the order --help lists them in.
from cifar10.models import (  # noqa: E402,F401
    mlp, shallow_cnn, deep_cnn, lenet, tutorial_cnn, convnet, cnn_bn, resnet18, speedrun,
)

__all__ = ["ClassifierModule", "ModelInfo", "create_model", "model_info", "model_names", "register"]
