"""What a sweep leaves in its study folder and prints at the end (also on `--report`).

- a table of the trials: number, state, value (best validation accuracy, the mean over seeds), the
  settings drawn, the run folders, and why a trial failed or was pruned;
- `best.yaml`: the best trial's settings as fit flags (model, recipe, the flags passed to every trial
  and the drawn ones), which `python -m cifar10.fit --config best.yaml` takes as it is;
- `history.png` and `importance.png`: Optuna's optimisation history and parameter importances
  (optuna.visualization.matplotlib; importances by Optuna's default evaluator, PED-ANOVA:
  Watanabe et al., "PED-ANOVA", IJCAI 2023);
- a JSON line, printed last: the study, trial counts by state, the best value and settings.
"""

import io
import json
import warnings
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, also on machines without a display

import optuna  # noqa: E402
import yaml  # noqa: E402
from optuna.exceptions import ExperimentalWarning  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402

from cifar10.files import atomic_write, atomic_write_text  # noqa: E402
from cifar10.reporting import format_table  # noqa: E402
from cifar10.settings import PATHS, PER_INVOCATION  # noqa: E402
from cifar10.sweep import budget  # noqa: E402
from cifar10.sweep.pruning import run_key  # noqa: E402

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


def sweep_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The study's trials without those released as beyond --trials (they never ran)."""
    return [t for t in study.get_trials(deepcopy=False)
            if not (budget.released(t) and t.user_attrs[budget.RELEASED].get("why") == "beyond --trials")]


def run_folders(trial: FrozenTrial, seeds: list[int]) -> list[str]:
    return [trial.user_attrs[run_key(s)] for s in seeds if run_key(s) in trial.user_attrs]


def note(trial: FrozenTrial) -> str:
    if budget.FAILED_TRIAL in trial.system_attrs:
        retried = f"retry of {trial.system_attrs[budget.FAILED_TRIAL]}"
    else:
        retried = ""
    why = ""
    if trial.state == TrialState.PRUNED:
        why = f"pruned after epoch {max(trial.intermediate_values, default='-')}"
    elif trial.state == TrialState.FAIL:
        why = (trial.user_attrs.get("error") or (trial.user_attrs.get(budget.RELEASED) or {}).get("why")
               or "its process stopped (retried)")
    return "; ".join(x for x in (retried, why) if x)


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def param_text(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def trials_table(trials: list[FrozenTrial], names: list[str], seeds: list[int]) -> str:
    headers = ["trial", "state", "value", *names, "run folder", "note"]
    rows = [[t.number, t.state.name, percent(t.value if t.state == TrialState.COMPLETE else None),
             *[param_text(t.params[n]) if n in t.params else "-" for n in names],
             " ".join(run_folders(t, seeds)) or "-", note(t)] for t in trials]
    return format_table(headers, rows) if rows else "no trials yet."


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    return max(complete, key=lambda t: t.value) if complete else None


def best_settings(study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
    """Fit flag names -> values: what the best trial trained with, as `--config` reads them."""
    info = study.user_attrs["cifar10"]
    fixed = {k: v for k, v in info["fixed"].items() if k not in PATHS + PER_INVOCATION + ("seed",)}
    return {"model": info["model"], "recipe": info["recipe"], **fixed, **trial.params}


def write_best_yaml(study_dir: Path, study: optuna.Study, trial: FrozenTrial) -> Path:
    header = (f"# best trial ({trial.number}) of study {study.study_name}: best validation accuracy "
              f"{percent(trial.value)}\n# train it: python -m cifar10.fit --config best.yaml [--data-dir DIR ...]\n")
    text = header + yaml.safe_dump(best_settings(study, trial), sort_keys=False)
    return atomic_write_text(study_dir / "best.yaml", text)


def save_figure(ax: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
    figure.set_size_inches(8, 5)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return atomic_write(path, buffer.getvalue())


def write_plots(study_dir: Path, study: optuna.Study) -> tuple[list[Path], list[str]]:
    """history.png and importance.png; a plot Optuna cannot draw yet (too few trials) is left out."""
    from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

    written, skipped = [], []
    for name, plot in (("history.png", plot_optimization_history), ("importance.png", plot_param_importances)):
        try:
            with warnings.catch_warnings():  # "experimental" plots; equal importances when few trials differ
                warnings.simplefilter("ignore", ExperimentalWarning)
                warnings.simplefilter("ignore", UserWarning)
                written.append(save_figure(plot(study), study_dir / name))
        except (ValueError, RuntimeError, ZeroDivisionError) as err:
            skipped.append(f"{name}: {err}")
    return written, skipped


def summary_line(study: optuna.Study, storage: str, total: int | None, best: FrozenTrial | None,
                 best_yaml: Path | None, plots: list[Path]) -> str:
    trials = sweep_trials(study)
    states = {s: sum(t.state.name == s for t in trials) for s in STATES}
    return json.dumps({
        "study": study.study_name, "storage": storage, "trials": total, "states": states,
        "best_trial": best.number if best else None, "best_value": best.value if best else None,
        "best_params": best.params if best else None, "best_yaml": str(best_yaml) if best_yaml else None,
        "plots": [str(p) for p in plots]})


def report(study: optuna.Study, study_dir: Path, storage: str, total: int | None = None) -> str:
    """Write best.yaml and the plots; the table, notes and the JSON line, to print."""
    info = study.user_attrs["cifar10"]
    names, seeds = list(info["space"]), info["seeds"]
    study_dir.mkdir(parents=True, exist_ok=True)
    best = best_trial(study)
    best_yaml = write_best_yaml(study_dir, study, best) if best else None
    plots, skipped = write_plots(study_dir, study)
    lines = [trials_table(sweep_trials(study), names, seeds), ""]
    if best:
        lines.append(f"best: trial {best.number}, best validation accuracy {percent(best.value)}; settings in "
                     f"{best_yaml}")
    lines += [f"plot: {p}" for p in plots] + [f"no plot {s}" for s in skipped]
    return "\n".join([*lines, summary_line(study, storage, total, best, best_yaml, plots)])

