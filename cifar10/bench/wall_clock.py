"""torch.cuda.Event's timing interface on the wall clock, for the record holders' scripts run on the CPU
(they time their epochs with CUDA events)."""

import time


class WallClockEvent:
    """torch.cuda.Event's timing interface, on the wall clock."""

    def __init__(self, **_) -> None:
        self.at = 0.0

    def record(self) -> None:
        self.at = time.perf_counter()

    def elapsed_time(self, end: "WallClockEvent") -> float:
        return 1e3 * (end.at - self.at)
