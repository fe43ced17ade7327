"""Batches of one or several inputs, and running a model whose batch dimension is fixed.

A batch is one tensor (image models) or a tuple of tensors, one per named input in the model's feeding
order; dimension 0 of every tensor is the batch. A model exported with a fixed batch of N only accepts
exactly N samples per call: :func:`chunked` feeds it chunks of N, pads the last chunk by repeating its last
sample and drops the padded outputs, so every sample is scored once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

Batch = torch.Tensor | tuple[torch.Tensor, ...]


def as_batch(tensors: Sequence[torch.Tensor]) -> Batch:
    """One tensor for a single input (what torch models take), else a tuple."""
    return tensors[0] if len(tensors) == 1 else tuple(tensors)


def tensors_of(batch: Batch) -> tuple[torch.Tensor, ...]:
    return (batch,) if isinstance(batch, torch.Tensor) else tuple(batch)


def batch_len(batch: Batch) -> int:
    return len(tensors_of(batch)[0])


def select(batch: Batch, rows: slice | torch.Tensor) -> Batch:
    return as_batch([t[rows] for t in tensors_of(batch)])


def pad_to(batch: Batch, size: int) -> Batch:
    """``batch`` grown to ``size`` samples by repeating its last sample."""
    missing = size - batch_len(batch)
    if missing <= 0:
        return batch
    return as_batch([torch.cat([t, t[-1:].expand(missing, *t.shape[1:])]) for t in tensors_of(batch)])


def chunked(fn: Callable[[Batch], torch.Tensor], batch: Batch, size: int | None) -> torch.Tensor:
    """``fn(batch)`` computed in calls of exactly ``size`` samples (None: one call of the whole batch)."""
    n = batch_len(batch)
    if size is None or n == size:
        return fn(batch)
    outputs = []
    for start in range(0, n, size):
        part = select(batch, slice(start, start + size))
        real = batch_len(part)
        outputs.append(fn(pad_to(part, size))[:real])
    return torch.cat(outputs)
