"""Train airbench94 itself on the CPU in 32-bit, on the same images: the accuracy reference for speedrun.

airbench (`pip install airbench`, 0.1.8) only runs on CUDA in 16-bit. This runs its own `train94`,
unchanged, with the CUDA calls pointed at the CPU: its net built in float32 (instead of `.half().cuda()`),
its loaders on the CPU in float32, and CUDA events/synchronisation replaced by the wall clock. So a
machine without a GPU can put airbench94 beside `python -m cifar10.fit --model speedrun --accelerator cpu`
on one copy of the data, with the same precision. It prints airbench's per-epoch table, then one JSON
line: test accuracy without and with its TTA (level 2, flip-shift), and the wall time of train94
(its per-epoch evaluations included; its table's last column is training alone).
About 100 minutes on 2 CPU cores; on a GPU use `python -m cifar10.bench speedrun --compare airbench`.

`--peer airbench94_muon` runs airbench94_muon.py (../shared/peers/) once instead, the same way
(`cifar10.bench.airbench_muon` says exactly what is pointed elsewhere): its per-epoch rows, then the JSON line.
"""

import argparse
import json
import tempfile
from importlib import metadata
from pathlib import Path

import torch

from cifar10.bench.speedrun import airbench94, import_airbench, on_cpu, prepare_airbench_data
from cifar10.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default="data", help="folder holding (or to receive) cifar-10-batches-py")
    parser.add_argument("--seed", type=int, default=0, help="torch.manual_seed before airbench's training")
    parser.add_argument("--epochs", type=float, default=None, help="airbench's train_epochs (default its 9.9)")
    parser.add_argument("--peer", choices=("airbench94", "airbench94_muon"), default="airbench94",
                        help="which record holder to train (default airbench94; airbench94_muon always trains its 8 "
                             "epochs)")
    parser.add_argument("--peer-script", type=Path, default=None,
                        help="airbench94_muon.py (default: ../shared/peers/airbench94_muon/ beside the checkout)")


def run_muon(args: argparse.Namespace) -> int:
    from cifar10.bench.airbench_muon import PEER_SCRIPT, airbench94_muon
    if args.epochs is not None:
        raise UserError("--epochs applies to airbench94 only: airbench94_muon.py trains its own 8 epochs.")
    with tempfile.TemporaryDirectory() as tmp:
        prepare_airbench_data(args.data_dir, Path(tmp) / "cifar10")
        done = airbench94_muon(Path(tmp), args.seed, args.peer_script or PEER_SCRIPT)
    for row in done["epochs"]:
        print(json.dumps(row))
    print(json.dumps({"peer": "airbench94_muon", "device": "cpu", "precision": "32", "seed": args.seed,
                      "epochs": len(done["epochs"]), "steps": done["steps"], "acc": done["acc"],
                      "acc_tta": done["acc_tta"], "train_s": round(done["train_s"], 1),
                      "threads": torch.get_num_threads()}))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.peer == "airbench94_muon":
        return run_muon(args)
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
