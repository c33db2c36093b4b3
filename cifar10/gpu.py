"""What a fit does only on a CUDA GPU: the bf16 question asked without initialising CUDA, the process-wide
speed settings, and the sync-debug guard (`CIFAR10_SYNC_DEBUG=1`) that turns a host synchronisation
between logging steps into an error.
"""

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch

from cifar10.lightning_internals import nvml_index

SYNC_DEBUG_ENV = "CIFAR10_SYNC_DEBUG"
NVML_LIBRARY = "libnvidia-ml.so.1"  # the NVIDIA driver's management library


def compute_capability_nvml(cuda_index: int = 0) -> tuple[int, int] | None:
    """(major, minor) of a visible CUDA device, asked through NVML (the driver's management library, the
    way PyTorch counts devices without initialising CUDA); None where NVML cannot answer."""
    try:
        nvml = ctypes.CDLL(NVML_LIBRARY)
        index = nvml_index(cuda_index)
    except (OSError, RuntimeError, ValueError):
        return None
    if nvml.nvmlInit_v2() != 0:
        return None
    try:
        handle, major, minor = ctypes.c_void_p(), ctypes.c_int(), ctypes.c_int()
        if nvml.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(handle)) != 0:
            return None
        if nvml.nvmlDeviceGetCudaComputeCapability(handle, ctypes.byref(major), ctypes.byref(minor)) != 0:
            return None
        return major.value, minor.value
    finally:
        nvml.nvmlShutdown()


def native_bf16() -> bool:
    """Whether the first visible GPU computes in bf16 natively (compute capability 8.0, Ampere, or later).

    Not torch.cuda.is_bf16_supported(): it initialises CUDA in the launching process, after which
    Lightning refuses the ddp_fork and ddp_notebook strategies, and by default it also says yes for GPUs
    that only emulate bf16 (slower than 32-bit there). Without NVML, PyTorch is asked (which does initialise).
    """
    if not torch.cuda.is_available():
        return False
    capability = compute_capability_nvml(0)
    if capability is None:
        capability = torch.cuda.get_device_capability(0)
    return capability[0] >= 8


NVML_CHECK_ENV = "PYTORCH_NVML_BASED_CUDA_CHECK"  # set to "1" by `import lightning`


def skip_nvml_check_without_nvml() -> None:
    """Where the NVIDIA driver's NVML library is not there (a machine without a driver), count CUDA devices
    the way PyTorch falls back to anyway, without first trying to load NVML again.

    Importing Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1, so every torch.cuda.is_available() loads
    libnvidia-ml.so.1 before asking the CUDA runtime; where it is missing, that is a failed dlopen each
    call. Adam and AdamW ask once every optimizer step (their graph-capture check): about 70 us a step on
    the 2-core CPU (py-spy). Without NVML, PyTorch's NVML count fails and it asks the runtime
    (cudaGetDeviceCount) itself, so the answer, and whether CUDA is initialised, stay as they were.
    """
    if os.environ.get(NVML_CHECK_ENV) != "1" or torch.version.hip:  # ROCm counts through amdsmi instead
        return
    try:
        ctypes.CDLL(NVML_LIBRARY)
    except OSError:
        os.environ[NVML_CHECK_ENV] = "0"


def set_fast_matmul(device: torch.device) -> None:
    """TF32 tensor cores for float32 matrix products and convolutions' matmuls on a CUDA device
    (torch.set_float32_matmul_precision("high"), as Lightning's warning recommends): 32-bit runs and the
    float32 parts of mixed-precision ones. cudnn.benchmark is the Trainer's own `benchmark` flag (settings)."""
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")


# --- the sync-debug guard ---------------------------------------------------------------------------------

def sync_debug_requested() -> bool:
    return os.environ.get(SYNC_DEBUG_ENV) == "1"


_armed = False  # whether SyncDebug has set the mode to "error" for the step under way


@contextmanager
def syncs_allowed() -> Iterator[None]:
    """A place that reads values back from the device on purpose at any step (the progress bar's refresh):
    under the sync-debug guard, synchronising here is not an error. (The loss check, the stop agreement and
    the throughput clock run at logging steps or at the epoch's end, which the guard leaves open.)"""
    if not _armed:
        yield
        return
    torch.cuda.set_sync_debug_mode("default")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("error")


class SyncDebug(L.Callback):
    """Under CIFAR10_SYNC_DEBUG=1 on a CUDA device: every training step that writes no logs runs with
    torch.cuda.set_sync_debug_mode("error"), from its start to the next step's, data fetch and
    augmentation included, so any host synchronisation there raises (PyTorch's own check). Logging steps,
    the epoch's last step, validation and our deliberate read-backs (`syncs_allowed`) may synchronise.

    Once, at the first batch, it asserts what the fast path promises: the batch is on the device and uint8
    until the model, the network's weights are channels-last where set, and the forward runs under bf16
    autocast where the precision says so. Goes last in the callback list (after StopOnSignal's collective).
    """

    def __init__(self) -> None:
        self.checked = False
        self.autocast: dict[str, Any] = {}  # what the first forward saw
        self.hook: Any = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if pl_module.device.type != "cuda":
            return
        if not self.checked:
            self.checked = True
            check_first_batch(pl_module, batch)
            self.hook = pl_module.register_forward_pre_hook(lambda module, args: self.autocast.update(
                enabled=torch.is_autocast_enabled("cuda"), dtype=torch.get_autocast_dtype("cuda")))
        logs = (trainer.global_step + 1) % trainer.log_every_n_steps == 0
        last = batch_idx + 1 >= trainer.num_training_batches
        set_armed(not (logs or last))

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        if self.hook is None:
            return
        self.hook.remove()
        self.hook = None
        want_bf16 = "bf16" in str(trainer.precision)
        got_bf16 = bool(self.autocast.get("enabled")) and self.autocast.get("dtype") == torch.bfloat16
        if want_bf16 != got_bf16:
            raise AssertionError(f"sync debug: precision {trainer.precision}, but the first forward ran with "
                                 f"autocast {self.autocast}")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        set_armed(False)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        set_armed(False)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        set_armed(False)


def set_armed(armed: bool) -> None:
    global _armed
    if armed != _armed:
        torch.cuda.set_sync_debug_mode("error" if armed else "default")
        _armed = armed


def check_first_batch(pl_module: L.LightningModule, batch: Any) -> None:
    images, problems = batch[0], []
    if images.device != pl_module.device:
        problems.append(f"the batch is on {images.device}, the model on {pl_module.device}")
    if images.dtype != torch.uint8:
        problems.append(f"the batch reaches the model as {images.dtype}, not uint8")
    if pl_module.hparams.get("channels_last"):
        wrong = [name for name, p in pl_module.net.named_parameters()
                 if p.dim() == 4 and not p.is_contiguous(memory_format=torch.channels_last)]
        if wrong:
            problems.append(f"channels-last is set but {', '.join(wrong[:3])} are not")
    if problems:
        raise AssertionError("sync debug: " + "; ".join(problems))


def guard_callbacks() -> list[L.Callback]:
    """The sync-debug guard when CIFAR10_SYNC_DEBUG=1, else nothing."""
    return [SyncDebug()] if sync_debug_requested() else []
