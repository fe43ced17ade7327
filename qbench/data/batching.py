"""Batches of one or several inputs, named outputs, and running a model whose batch dimension is fixed.

A batch is one tensor (image models) or a tuple of tensors, one per named input in the model's feeding
order; dimension 0 of every tensor is the batch. What a deployment runs is a :data:`NamedBatch` (input name ->
tensor, in feeding order) and what it returns is :data:`Outputs` (output name -> tensor, in the model's order).
A model exported with a fixed batch of N only accepts exactly N samples per call: :func:`chunked` feeds it
chunks of N, pads the last chunk by repeating its last sample and drops the padded outputs, so every sample
is scored once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

Batch = torch.Tensor | tuple[torch.Tensor, ...]
NamedBatch = dict[str, torch.Tensor]
Outputs = dict[str, torch.Tensor]


def as_batch(tensors: Sequence[torch.Tensor]) -> Batch:
    """One tensor for a single input (what torch models take), else a tuple."""
    return tensors[0] if len(tensors) == 1 else tuple(tensors)


def tensors_of(batch: Batch | Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    if isinstance(batch, Mapping):
        return tuple(batch.values())
    return (batch,) if isinstance(batch, torch.Tensor) else tuple(batch)


def named(names: Sequence[str], batch: Batch) -> NamedBatch:
    """``batch`` keyed by the model's input names (feeding order)."""
    return dict(zip(names, tensors_of(batch), strict=True))


def output_names(count: int) -> tuple[str, ...]:
    """Names of a torch module's outputs, which have none of their own (and of qbench's ONNX exports of it)."""
    return ("output",) if count == 1 else tuple(f"output_{i}" for i in range(count))


def module_outputs(result: Any) -> Outputs:
    """A torch module's result (a tensor, a tuple of tensors, or a dict of them) as named outputs."""
    if isinstance(result, Mapping):
        return dict(result)
    values = (result,) if isinstance(result, torch.Tensor) else tuple(result)
    return dict(zip(output_names(len(values)), values, strict=True))


def _map(batch: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``fn`` applied to every tensor of a batch (tensor, tuple or named), keeping its form."""
    if isinstance(batch, Mapping):
        return {k: fn(v) for k, v in batch.items()}
    return as_batch([fn(t) for t in tensors_of(batch)])


def batch_len(batch: Batch | Mapping[str, torch.Tensor]) -> int:
    return len(tensors_of(batch)[0])


def select(batch: Any, rows: slice | torch.Tensor) -> Any:
    return _map(batch, lambda t: t[rows])


def pad_to(batch: Any, size: int) -> Any:
    """``batch`` grown to ``size`` samples by repeating its last sample."""
    missing = size - batch_len(batch)
    if missing <= 0:
        return batch
    return _map(batch, lambda t: torch.cat([t, t[-1:].expand(missing, *t.shape[1:])]))


def chunked(fn: Callable[[Any], Any], batch: Any, size: int | None) -> Any:
    """``fn(batch)`` computed in calls of exactly ``size`` samples (None: one call of the whole batch). ``fn``
    returns a tensor or named outputs; chunks are concatenated along dimension 0 either way."""
    n = batch_len(batch)
    if size is None or n == size:
        return fn(batch)
    outputs = []
    for start in range(0, n, size):
        part = select(batch, slice(start, start + size))
        real = batch_len(part)
        outputs.append(_map(fn(pad_to(part, size)), lambda t, real=real: t[:real]))
    if isinstance(outputs[0], Mapping):
        return {name: torch.cat([o[name] for o in outputs]) for name in outputs[0]}
    return torch.cat(outputs)
