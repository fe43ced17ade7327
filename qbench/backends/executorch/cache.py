"""Lowered ExecuTorch programs kept between cells, like the ONNX exports: lowering a model to a ``.pte``
(``torch.export`` -> PT2E -> ``to_edge_transform_and_lower``) takes 4-6 s for digits_cnn and more for resnet18, and
every quantized cell lowers its FP32 reference once more for the paired window. The lowering of the same network,
scheme, calibration data and shapes by the same torch and ExecuTorch gives the same program, so it is done once.

Key (everything the program depends on): the module tree and every weight and buffer of the network that is
exported (the FP32 model, or the simulation's float network a quantized cell hands to PT2E), the export example's
shapes and its dynamic batch, the quantizer settings and a digest of the calibration inputs (int8), and the torch /
ExecuTorch versions. Stored with the program: what the lowering found (the lowered graph's compute ops, delegated
subgraphs) and the tags it set, so a cached cell reports the same op mix as the cell that lowered it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from qbench.config import paths
from qbench.storage import cached

CACHE_VERSION = 1  # bump when what the cache holds, or how the lowering is done, changes


@dataclass
class LoweredProgram:
    """A ``.pte`` program and what its lowering found."""

    buffer: bytes
    ops: list[tuple[str, bool, bool, bool, int | None]]  # :func:`qbench.backends.executorch.deploy.lowered_ops`
    subgraphs: int
    tags: dict[str, str]


def _digest_tensors(h: Any, tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
    for name, tensor in tensors:
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def program_key(model: nn.Module, example: tuple[torch.Tensor, ...], dynamic: Any, settings: dict[str, Any],
                calibration: Iterable[torch.Tensor] = ()) -> str:
    """The cache key of lowering ``model`` with this example, dynamic batch, quantizer ``settings`` and
    calibration inputs (empty for FP32)."""
    from executorch.version import __version__ as et_version

    h = hashlib.sha256()
    h.update(json.dumps({"cache": CACHE_VERSION, "torch": torch.__version__, "executorch": et_version,
                         "module": repr(model), "example": [(str(t.dtype), tuple(t.shape)) for t in example],
                         "dynamic": repr(dynamic), "settings": settings}, sort_keys=True, default=str).encode())
    _digest_tensors(h, model.state_dict().items())
    _digest_tensors(h, ((f"calibration.{i}", t) for i, t in enumerate(calibration)))
    return h.hexdigest()[:24]


def _save(program: LoweredProgram, path: Path) -> None:
    meta = json.dumps({"ops": program.ops, "subgraphs": program.subgraphs, "tags": program.tags})
    with path.open("wb") as f:
        np.savez(f, buffer=np.frombuffer(program.buffer, dtype=np.uint8), meta=np.array(meta))


def _load(path: Path) -> LoweredProgram:
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        return LoweredProgram(data["buffer"].tobytes(), [tuple(op) for op in meta["ops"]], int(meta["subgraphs"]),
                              dict(meta["tags"]))


def cache_folder() -> Path:
    """Where lowered programs are kept (under qbench's cache, ``QBENCH_CACHE``)."""
    return paths.cache_dir() / "executorch"


def lowered(key: str, lower: Callable[[], LoweredProgram]) -> tuple[LoweredProgram, bool]:
    """The program of ``key``, lowered by ``lower()`` once (under a file lock: concurrent cells lower it once);
    returns it and whether it came from the cache."""
    path = cache_folder() / f"{key}.npz"
    return cached(path, lower, _save, _load, suffix=".npz")
