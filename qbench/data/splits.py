"""The data a cell works on: fixed, seeded splits shared by every cell of a suite."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, TensorDataset


@dataclass
class DataSplits:
    """Train (reference models and QAT), calibration (PTQ ranges) and evaluation (all metrics) splits.

    Datasets without labels (``fake``) have ``has_labels=False``: their label tensors are placeholders and
    task metrics (top-1, top-5) are absent — fidelity to FP32 (agreement, SQNR, KL) is still measured.
    """

    train: TensorDataset | None
    calibration: TensorDataset
    evaluation: TensorDataset
    num_classes: int
    input_shape: tuple[int, ...]  # one sample, e.g. (3, 32, 32)
    has_labels: bool = True
    # counts worth reporting (e.g. unreadable images skipped), recorded as data.* metrics
    notes: dict[str, float] = field(default_factory=dict)

    def loader(self, split: str, batch_size: int, shuffle: bool = False, seed: int = 0) -> DataLoader:
        dataset = getattr(self, split)
        if dataset is None:
            raise ValueError(f"this dataset has no {split} split")
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)

    def calibration_inputs(self, samples: int, batch_size: int) -> list[torch.Tensor]:
        """The first ``samples`` calibration images (fixed order) in batches."""
        images = self.calibration.tensors[0][:samples]
        return list(images.split(batch_size))

    def evaluation_inputs(self, count: int) -> torch.Tensor:
        """The first ``count`` evaluation images as one batch (latency and throughput inputs)."""
        images = self.evaluation.tensors[0]
        if count > len(images):  # a small evaluation split: repeat it to fill the batch
            images = images.repeat((count + len(images) - 1) // len(images), *([1] * (images.dim() - 1)))
        return images[:count].contiguous()
