"""``fake``: seeded random tensors for every input of the model, for latency and fidelity runs.

Each input is filled by its rule (:mod:`qbench.config.inputs`: ``normal``, ``uniform``, ``zeros``, ``ones``,
``randint:LOW:HIGH``; ``model.inputs`` sets it per input). There are no labels: task accuracy is absent
(not zero); fidelity to FP32 is still measured."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import TensorDataset

from qbench.config.inputs import InputContract, InputSpec, parse_fill
from qbench.data.splits import DataSplits


def fill(spec: InputSpec, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` samples of ``spec`` drawn by its fill rule."""
    kind, low, high = parse_fill(spec.fill, f"model.inputs.{spec.name}.fill")
    size = (count, *spec.shape)
    dtype = getattr(torch, spec.dtype)
    if kind == "normal":
        values = torch.randn(size, generator=generator)
    elif kind == "uniform":
        values = torch.rand(size, generator=generator)
    elif kind == "randint":
        values = torch.randint(low, high, size, generator=generator)
    else:
        values = (torch.zeros if kind == "zeros" else torch.ones)(size)
    return values.to(dtype)


def load_fake_splits(dataset_cfg: Any, model_cfg: Any, contract: InputContract) -> DataSplits:
    generator = torch.Generator().manual_seed(dataset_cfg.split_seed)

    def split(n: int) -> TensorDataset:
        inputs = [fill(spec, n, generator) for spec in contract.inputs]
        return TensorDataset(*inputs, torch.full((n,), -1, dtype=torch.long))

    calibration, evaluation = split(dataset_cfg.calibration_size), split(dataset_cfg.evaluation_size)
    return DataSplits(train=None, calibration=calibration, evaluation=evaluation,
                      num_classes=dataset_cfg.num_classes or model_cfg.num_classes,
                      input_shape=contract.inputs[0].shape, has_labels=False, contract=contract)
