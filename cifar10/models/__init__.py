"""CIFAR-10 architectures: every module of this package is one, registered by @register on import.

Every module here except `base`, `registry`, `layers` and private ones (`_name`) is an architecture and is
imported below, so a new file is picked up with nothing else edited. The registry's functions are
re-exported: `from cifar10.models import create_model` works as well as from cifar10.models.registry.
"""

import importlib
import pkgutil

from cifar10.models.base import ClassifierModule
from cifar10.models.registry import (ModelInfo, create_model, model_hparam_names, model_info, model_names, recipe,
                                     register)

NOT_ARCHITECTURES = {"base", "registry", "layers"}  # the shared module, the registry, shared building blocks


def import_architectures() -> list[str]:
    """Import every architecture module of this package (each registers its model); returns their names.
    Modules already imported are not run again."""
    names = [module.name for module in pkgutil.iter_modules(__path__)
             if module.name not in NOT_ARCHITECTURES and not module.name.startswith("_")]
    for module_name in names:
        importlib.import_module(f"{__name__}.{module_name}")
    return names


import_architectures()

__all__ = ["ClassifierModule", "ModelInfo", "create_model", "model_hparam_names", "model_info", "model_names",
           "recipe", "register"]
