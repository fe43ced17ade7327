"""Model size: bytes on disk (every file of the artifact) and weight bytes by dtype / packed bit-width."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import torch
from torch import nn

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


def parameter_bytes_by_dtype(model: nn.Module) -> dict[str, int]:
    """Bytes of parameters and buffers grouped by dtype (what the float model carries)."""
    counts: Counter[str] = Counter()
    for t in list(model.parameters()) + list(model.buffers()):
        counts[str(t.dtype).replace("torch.", "")] += t.numel() * t.element_size()
    return dict(counts)


def fp32_weight_bytes(model: nn.Module) -> int:
    return sum(p.numel() * 4 for p in model.parameters() if p.is_floating_point())


def packed_model_bytes(model: nn.Module, quantized: dict[str, QuantizedTensor]) -> int:
    """Bytes of the model with quantized weights bit-packed at their width and everything else in fp32
    (biases, unquantized layers, folded BatchNorm): the size an ideal integer deployment would store."""
    quantized_ids = set()
    total = 0
    for name, q in quantized.items():
        total += q.packed_nbytes()
        quantized_ids.add(name)
    for name, p in model.named_parameters():
        layer = name.rsplit(".", 2)[0] if name.endswith(".layer.weight") else None
        if layer is not None and layer in quantized_ids:
            continue
        total += p.numel() * 4
    return total


def code_bytes_by_bits(quantized: dict[str, QuantizedTensor]) -> dict[str, int]:
    """Packed weight bytes grouped by bit-width, e.g. {"int4": 12345}."""
    counts: Counter[str] = Counter()
    for q in quantized.values():
        counts[f"int{q.bits}"] += math.ceil(q.numel * q.bits / 8)
    return dict(counts)


def state_dict_nbytes(state: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in state.values() if isinstance(t, torch.Tensor))
