"""Safe loading of this project's checkpoints: the file alone says which model to build (its
normalisation and class names included), and nothing in it can run code (weights-only unpickling)."""

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cifar10.data import CLASSES
from cifar10.errors import UserError
from cifar10.models import create_model, model_hparam_names, model_names
from cifar10.models.base import CHECKPOINT_FORMAT, ClassifierModule
from cifar10.settings import ModelSettings


@dataclass(frozen=True)
class Meta:
    model: str  # registered model name
    class_names: list[str]
    mean: tuple[float, float, float]  # per channel, in 0..1 pixel units
    std: tuple[float, float, float]
    hparams: dict[str, Any]  # as saved; model_settings(...) reads the model section back from them
    precision: str = "32"  # what the run trained (and fit's own test ran) with, from its RunRecord


def _not_ours(path: Path, why: str) -> UserError:
    return UserError(f"{path} is not a checkpoint of this project ({why}). Pass a .ckpt written by "
                     "`python -m cifar10.fit`, e.g. <logdir>/<model>/version_N/checkpoints/best.ckpt.")


def _why_unreadable(err: Exception) -> str:
    # torch words it "Unsupported global: GLOBAL x.y" or "unsupported GLOBAL x.y whose module x is blocked"
    unsafe = re.search(r"GLOBAL ([\w.]+)", str(err))
    if unsafe:
        return (f"refused: it holds code: a pickled {unsafe.group(1)} object, which weights-only loading refuses "
                "to build; nothing in it was executed")
    return f"it is not a PyTorch checkpoint file, or it is damaged or cut short: {type(err).__name__}"


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The raw checkpoint dict, unpickled weights-only; UserError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist or is not a file: check the path "
                        "(fit writes <logdir>/<model>/version_N/checkpoints/best.ckpt).")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for bytes it cannot read as a checkpoint
        raise _not_ours(path, _why_unreadable(err)) from None
    if not isinstance(ckpt, dict) or "cifar10" not in ckpt:
        raise _not_ours(path, "it has no 'cifar10' entry; a plain state_dict or another project's file?")
    for key in ("hyper_parameters", "state_dict"):
        if not isinstance(ckpt.get(key), dict):
            raise _not_ours(path, f"its {key!r} entry is missing")
    return ckpt


def checkpoint_meta(ckpt: dict, path: str | Path = "checkpoint") -> Meta:
    hparams = dict(ckpt["hyper_parameters"])
    name = ckpt["cifar10"].get("model") if isinstance(ckpt["cifar10"], dict) else None
    if name not in model_names():
        raise UserError(f"{path} holds model {name!r}, which this version of cifar10 does not have "
                        f"(known: {', '.join(model_names())}). Use the cifar10 version that trained it.")
    try:
        meta = Meta(model=name, class_names=[str(c) for c in hparams["class_names"]],
                    mean=tuple(float(m) for m in hparams["mean"]), std=tuple(float(s) for s in hparams["std"]),
                    hparams=hparams, precision=recorded_precision(ckpt))
    except (KeyError, TypeError, ValueError) as err:
        raise _not_ours(Path(path), f"its hyper_parameters lack usable {err}") from None
    if len(meta.class_names) != len(CLASSES) or len(meta.mean) != 3 or len(meta.std) != 3:
        raise _not_ours(Path(path), f"it names {len(meta.class_names)} classes and {len(meta.mean)} channel means; "
                        f"CIFAR-10 has {len(CLASSES)} and 3")
    return meta


def recorded_precision(ckpt: dict) -> str:
    """The --precision the checkpoint's run trained with ("32" when it does not say)."""
    record = ckpt.get("callbacks", {}).get("RunRecord", {})
    precision = record.get("precision") if isinstance(record, dict) else None
    return precision if precision in ("32", "16-mixed", "bf16-mixed") else "32"


def model_settings(ckpt: dict, meta: Meta, path: str | Path = "checkpoint") -> ModelSettings:
    """The model section the checkpoint was trained with. A setting added since it was written takes its
    field's default (as it trained: the setting did not exist); one this version no longer has is refused."""
    unknown = sorted(set(meta.hparams) - {"model", *model_hparam_names(meta.model)})
    if unknown:
        written = ckpt["cifar10"].get("format", 1)
        raise UserError(f"{path} (checkpoint format {written}; this version writes format {CHECKPOINT_FORMAT}) holds "
                        f"hyper-parameters this version of cifar10 does not have: {', '.join(map(str, unknown))}. "
                        "Use the cifar10 version that trained it.")
    return ModelSettings.from_hparams(meta.hparams)


def build_model(ckpt: dict, path: str | Path = "checkpoint") -> tuple[ClassifierModule, Meta]:
    """The checkpoint's model with its weights loaded (on the CPU); UserError when they do not fit it."""
    meta = checkpoint_meta(ckpt, path)
    model = create_model(meta.model, model_settings(ckpt, meta, path), mean=meta.mean, std=meta.std,
                         class_names=meta.class_names)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError:
        raise UserError(f"the weights in {path} do not fit model {meta.model!r} (missing or unexpected layers, or "
                        "other shapes): was the file edited, or written by another version of cifar10? Use the "
                        "checkpoint as fit wrote it.") from None
    return model, meta


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[ClassifierModule, Meta]:
    """(model in eval mode on `map_location`, Meta) from a checkpoint written by the fit CLI."""
    model, meta = build_model(read_checkpoint(path), path)
    return model.to(map_location).eval(), meta
