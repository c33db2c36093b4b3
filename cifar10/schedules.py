"""Learning-rate schedules: the rate after each optimizer step, as a multiple of the peak.

SCHEDULES maps each --schedule name to a builder: given the run's total steps, it returns the factor
function a LambdaLR steps through (step -> multiple of the peak). Steps past the end keep the last value.
"""

import math
from collections.abc import Callable

from cifar10.errors import look_up

Factor = Callable[[int], float]  # optimizer step -> the learning rate as a multiple of the peak


def cosine_between(start: float, end: float, share: float) -> float:
    return end + (start - end) * (1 + math.cos(math.pi * share)) / 2


def linear_between(start: float, end: float, share: float) -> float:
    return start + (end - start) * share


def one_cycle(rise: float, start: float, end: float, curve: Callable[[float, float, float], float]):
    """A rise from `start` to the peak over the first `rise` share of the run, then a fall to `end` (start and
    end as multiples of the peak), both along `curve`; the peak's step is placed as OneCycleLR places it."""

    def build(total_steps: int) -> Factor:
        top = rise * total_steps - 1

        def factor(step: int) -> float:
            if 0 < top and step <= top:
                return curve(start, 1.0, step / top)
            return curve(1.0, end, min(1.0, (step - top) / (total_steps - 1 - top)))

        return factor

    return build


def to_zero(curve: Callable[[float, float, float], float]):
    """From the peak down to 0 over the run, along `curve`."""

    def build(total_steps: int) -> Factor:
        return lambda step: curve(1.0, 0.0, min(step, total_steps) / total_steps)

    return build


def constant(total_steps: int) -> Factor:
    """The peak throughout. build_optimizer makes no LR scheduler at all for it (the optimizer's own rates)."""
    return lambda step: 1.0


SCHEDULES: dict[str, Callable[[int], Factor]] = {
    "onecycle": one_cycle(0.3, 1 / 25, 1 / 25e4, cosine_between),  # the shape and defaults of PyTorch's OneCycleLR
    "triangle": one_cycle(0.23, 0.2, 0.07, linear_between),  # airbench's
    "cosine": to_zero(cosine_between),
    "linear": to_zero(linear_between),  # airbench94_muon's
    "none": constant,
}


def schedule_builder(name: str) -> Callable[[int], Factor]:
    """The builder of schedule `name`; a UserError naming the schedules for an unknown one."""
    return look_up(SCHEDULES, name, "schedule")


def lr_factor(schedule: str, total_steps: int) -> Factor:
    """The learning rate after `step` optimizer steps, as a multiple of the peak, for a run of total_steps.

    onecycle: cosine from 1/25 up to the peak at 30% of the run, then cosine down to 1/25e4 (the shape of
    PyTorch's OneCycleLR). triangle (airbench's): linear from 0.2 up to the peak at 23%, then linear down
    to 0.07. cosine: from the peak down to 0. linear (airbench94_muon's): straight from the peak down to 0.
    none: the peak throughout.
    """
    return schedule_builder(schedule)(total_steps)
