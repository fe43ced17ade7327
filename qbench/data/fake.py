"""``fake``: seeded random tensors of the model's input shape, for latency-only runs.

There are no labels: task accuracy is absent (not zero); fidelity to FP32 is still measured."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import TensorDataset

from qbench.data.splits import DataSplits
from qbench.zoo.preprocess import Preprocess


def load_fake_splits(dataset_cfg: Any, model_cfg: Any, preprocess: Preprocess) -> DataSplits:
    generator = torch.Generator().manual_seed(dataset_cfg.split_seed)
    shape = preprocess.input_shape

    def split(n: int) -> TensorDataset:
        return TensorDataset(torch.randn(n, *shape, generator=generator), torch.full((n,), -1, dtype=torch.long))

    calibration, evaluation = split(dataset_cfg.calibration_size), split(dataset_cfg.evaluation_size)
    return DataSplits(train=None, calibration=calibration, evaluation=evaluation,
                      num_classes=dataset_cfg.num_classes or model_cfg.num_classes, input_shape=shape,
                      has_labels=False)
