"""Model size: bytes on disk (every file of the artifact) and weight bytes by dtype / packed bit-width."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from qbench.quant.affine import QuantizedTensor



def files_nbytes(paths: list[Path]) -> int:
    """Total size of the artifact's files (directories are walked: ONNX external data included)."""
    total = 0
    for path in paths:
        if path.is_dir():
            total += sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        elif path.exists():
            total += path.stat().st_size
    return total


def tensor_bytes_by_dtype(tensors: Iterable[torch.Tensor]) -> dict[str, int]:
    """Bytes of tensors grouped by dtype (quantized torch tensors count their integer storage)."""
    counts: Counter[str] = Counter()
    for t in tensors:
        counts[str(t.dtype).replace("torch.", "")] += t.numel() * t.element_size()
    return dict(counts)


def module_bytes_by_dtype(model: nn.Module) -> dict[str, int]:
    """What a deployed torch module holds, by dtype: its state dict, with packed quantized weights unpacked."""
    tensors = []
    for value in model.state_dict().values():
        if isinstance(value, torch.Tensor):
            tensors.append(value)
        elif isinstance(value, tuple):  # packed params of quantized modules: (weight, bias)
            tensors.extend(v for v in value if isinstance(v, torch.Tensor))
    return tensor_bytes_by_dtype(tensors)


def fp32_weight_bytes(model: nn.Module) -> int:
    return sum(p.numel() * 4 for p in model.parameters() if p.is_floating_point())


def onnx_bytes_by_dtype(path: Path) -> dict[str, int]:
    """Bytes of an ONNX file's initializers grouped by element type (int8, uint8, float, int32, ...)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path), load_external_data=True)
    counts: Counter[str] = Counter()
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        counts[str(array.dtype)] += array.nbytes
    return dict(counts)


def code_bytes_by_bits(quantized: dict[str, QuantizedTensor]) -> dict[str, int]:
    """Packed weight bytes grouped by bit-width, e.g. {"int4": 12345}."""
    counts: Counter[str] = Counter()
    for q in quantized.values():
        counts[f"int{q.stored_bits}"] += math.ceil(q.numel * q.stored_bits / 8)
    return dict(counts)
