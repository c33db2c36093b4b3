"""Train airbench94 itself on the CPU in 32-bit, on the same images: the accuracy reference for speedrun.

airbench (`pip install airbench`, 0.1.8) only runs on CUDA in 16-bit. This runs its own `train94`,
unchanged, with the CUDA calls pointed at the CPU: its net built in float32 (instead of `.half().cuda()`),
its loaders on the CPU in float32, and CUDA events/synchronisation replaced by the wall clock. So a
session without a GPU can put airbench94 beside `python -m cifar10.fit --model speedrun --accelerator cpu`
on one copy of the data, with the same precision. It prints airbench's per-epoch table, then one JSON
line: test accuracy without and with its TTA (level 2, flip-shift), and the wall time of train94
(its per-epoch evaluations included; its table's last column is training alone).
About 100 minutes on 2 CPU cores; on a GPU use `python -m cifar10.bench speedrun --compare airbench`.
"""

import argparse
import json
import tempfile
from importlib import metadata
from pathlib import Path

import torch

from cifar10.bench.speedrun import airbench94, import_airbench, on_cpu, prepare_airbench_data


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default="data", help="folder holding (or to receive) cifar-10-batches-py")
    parser.add_argument("--seed", type=int, default=0, help="torch.manual_seed before airbench's training")
    parser.add_argument("--epochs", type=float, default=None, help="airbench's train_epochs (default its 9.9)")


def run(args: argparse.Namespace) -> int:
    airbench = import_airbench()
    from airbench.lib_airbench94 import hyp
    epochs = hyp["opt"]["train_epochs"] if args.epochs is None else args.epochs
    with tempfile.TemporaryDirectory() as tmp, on_cpu(airbench):
        prepare_airbench_data(args.data_dir, Path(tmp) / "cifar10")
        trained = airbench94(airbench, Path(tmp), args.seed, epochs=epochs, verbose=True)
    print(json.dumps({"airbench": metadata.version("airbench"), "device": "cpu", "precision": "32",
                      "seed": args.seed, "epochs": epochs, "acc": trained["acc"], "acc_tta": trained["acc_tta"],
                      "wall_s": round(trained["train_s"], 1), "threads": torch.get_num_threads()}))
    return 0
