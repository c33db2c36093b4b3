"""Run folders (`<logdir>/<model>/version_N/`), where to resume from, and metrics.json."""

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cifar10.checkpoint import read_checkpoint
from cifar10.errors import UserError

VERSION = re.compile(r"version_(\d+)")
SETTINGS_KEY = "RunSettings"  # state key of cifar10.callbacks.RunSettings inside ckpt["callbacks"]


@dataclass(frozen=True)
class ResumePoint:
    """A checkpoint to resume from, the run folder it belongs to (if any) and what it records."""

    ckpt: Path
    model: str
    run_dir: Path | None  # <save_dir>/<name>/version_N when the checkpoint sits in a run folder
    settings: dict[str, Any] = field(default_factory=dict)  # the resolved settings it was trained with

    @property
    def version(self) -> int | None:
        return int(VERSION.fullmatch(self.run_dir.name).group(1)) if self.run_dir else None


def version_dirs(logdir: Path, model: str) -> list[Path]:
    """Run folders of a model, oldest version first."""
    runs = [p for p in (Path(logdir) / model).glob("version_*") if VERSION.fullmatch(p.name) and p.is_dir()]
    return sorted(runs, key=lambda p: int(p.name.removeprefix("version_")))


def latest_checkpoint(logdir: Path, model: str) -> Path:
    """checkpoints/last.ckpt of the newest run of `model` that has one."""
    for run in reversed(version_dirs(logdir, model)):
        if (last := run / "checkpoints" / "last.ckpt").is_file():
            return last
    raise UserError(
        f"--ckpt-path last found no earlier run of {model!r} under {Path(logdir)}/{model}/ (no "
        "version_N/checkpoints/last.ckpt). Train it first, pass the --model and --logdir of that run, "
        "or give the checkpoint's path.")


def read_checkpoint_meta(path: Path) -> tuple[str, dict[str, Any]]:
    """The model name and saved run settings of a project checkpoint (weights_only load, CPU)."""
    ckpt = read_checkpoint(path)  # UserError for unreadable files and other projects' checkpoints
    settings = ckpt.get("callbacks", {}).get(SETTINGS_KEY, {}).get("settings", {})
    return ckpt["cifar10"]["model"], dict(settings)


def resume_point(ckpt_path: str, logdir: Path, model: str | None) -> ResumePoint:
    """Resolve `--ckpt-path` ('last' or a file) and check it holds `model` (None: take the checkpoint's)."""
    if ckpt_path == "last":
        path = latest_checkpoint(logdir, model)
    else:
        path = Path(ckpt_path).expanduser()
        if not path.is_file():
            raise UserError(f"checkpoint {path} does not exist. Pass an existing .ckpt file, or "
                            "'--ckpt-path last' to resume the newest run of --model under --logdir.")
    saved_model, settings = read_checkpoint_meta(path)
    if model is not None and saved_model != model:
        raise UserError(f"{path} holds a {saved_model!r} model, not {model!r}. Resume it with "
                        f"--model {saved_model}, or pick a checkpoint of {model!r}.")
    run_dir = path.parent.parent
    in_run = path.parent.name == "checkpoints" and VERSION.fullmatch(run_dir.name) is not None
    return ResumePoint(path, saved_model, run_dir if in_run else None, settings)


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> Path:
    """Write metrics.json into the run folder."""
    path = Path(run_dir) / "metrics.json"
    path.write_text(json.dumps(metrics, indent=2) + "\n")
    return path
