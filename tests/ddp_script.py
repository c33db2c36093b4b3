"""A fit under DDP with a probe callback, run as a script: Lightning's launcher starts each further rank by
running this file again with the same arguments (`python -m cifar10.fit` cannot take a callback).

    python tests/ddp_script.py PROBE FIT-FLAGS...

PROBE: `nan-on-rank-1` makes rank 1's loss nan at global step 1 (the others stay finite);
`count-broadcasts` prints, per rank, a JSON line with the torch.distributed.broadcast calls made while
training epochs ran.
"""

import json
import sys

import lightning as L
import torch

from cifar10.fit import main


class NanOnRank1(L.Callback):
    """Rank 1's training_step returns nan at global step 1; its backward still runs (so do the all-reduces)."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = pl_module.training_step

        def poisoned(batch, batch_idx):
            loss = step(batch, batch_idx)
            return loss * float("nan") if trainer.global_rank == 1 and trainer.global_step == 1 else loss

        pl_module.training_step = poisoned


class CountBroadcasts(L.Callback):
    def __init__(self) -> None:
        self.calls, self.counting = 0, False
        original = torch.distributed.broadcast

        def counted(*args, **kwargs):
            self.calls += self.counting
            return original(*args, **kwargs)

        torch.distributed.broadcast = counted

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.counting = True

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.counting = False

    def on_fit_end(self, trainer, pl_module) -> None:
        print(json.dumps({"rank": trainer.global_rank, "broadcasts": self.calls, "steps": trainer.global_step}),
              flush=True)


PROBES = {"nan-on-rank-1": NanOnRank1, "count-broadcasts": CountBroadcasts}

if __name__ == "__main__":
    sys.exit(main(sys.argv[2:], callbacks=[PROBES[sys.argv[1]]()]))
