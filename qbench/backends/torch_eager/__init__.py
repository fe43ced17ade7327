"""``torch``: eager PyTorch, the FP32 model (``kernel: fp32``) or the fake-quant model of the scheme
(``kernel: simulated``), on the CPU or a CUDA device. Capabilities here (torch-free); deployment in ``deploy``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from qbench.backends.base import TORCH_MODEL_NEEDED, Backend

if TYPE_CHECKING:
    from qbench.config import QBenchConfig

# one folder per GPU the NVIDIA driver has found (Linux)
_NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")


def cuda_device_count() -> int:
    """CUDA devices this process would see, read without importing torch: the GPUs the NVIDIA driver lists,
    narrowed by ``CUDA_VISIBLE_DEVICES`` (which CUDA reads up to its first invalid entry)."""
    installed = len(list(_NVIDIA_GPUS.iterdir())) if _NVIDIA_GPUS.is_dir() else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return installed
    entries = []
    for entry in visible.split(","):
        entry = entry.strip()
        if not entry or entry.startswith("-"):
            break
        entries.append(entry)
    return min(len(entries), installed)


def cuda_index(device: str) -> int | None:
    """N of ``cuda`` (0) or ``cuda:N``; None for anything else."""
    if device == "cuda":
        return 0
    prefix, _, index = device.partition(":")
    return int(index) if prefix == "cuda" and index.isdigit() else None


class TorchEagerBackend(Backend):
    name = "torch"

    def unsupported_reason(self, cfg: QBenchConfig) -> str | None:
        if cfg.model.source == "onnx":
            return TORCH_MODEL_NEEDED
        device = cfg.backend.device
        if device == "cpu":
            return None
        index = cuda_index(device)
        if index is None:
            return f"backend.device={device}: the torch backend runs on cpu or cuda[:N]"
        count = cuda_device_count()
        if count == 0:
            return f"backend.device={device}: CUDA is not available on this host"
        if index >= count:
            return f"backend.device={device}: this host has {count} CUDA device{'s' if count > 1 else ''}"
        return None
