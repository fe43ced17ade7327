"""The data a cell works on: fixed, seeded splits shared by every cell of a suite."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, TensorDataset

from qbench.config.inputs import InputContract, image_contract
from qbench.data.batching import Batch, NamedBatch, as_batch, named, pad_to


@dataclass
class DataSplits:
    """Train (reference models and QAT), calibration (PTQ ranges) and evaluation (all metrics) splits.

    Datasets without labels (``fake``) have ``has_labels=False``: their label tensors are placeholders and
    task metrics (top-1, top-5) are absent — fidelity to FP32 (agreement, SQNR, KL) is still measured.

    Each split is a TensorDataset whose leading tensors are the model's inputs in ``contract`` order and
    whose last tensor is the labels; image datasets have one input.
    """

    train: TensorDataset | None
    calibration: TensorDataset
    evaluation: TensorDataset
    num_classes: int
    input_shape: tuple[int, ...]  # one sample of the first input, e.g. (3, 32, 32)
    has_labels: bool = True
    # counts worth reporting (e.g. unreadable images skipped), recorded as data.* metrics
    notes: dict[str, float] = field(default_factory=dict)
    # the model's inputs (names, shapes, dtypes, fixed batch); default: one image input of input_shape
    contract: InputContract | None = None

    def __post_init__(self) -> None:
        if self.contract is None:
            self.contract = image_contract(self.input_shape)

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the model is fixed at (every call must have exactly this many samples), or None."""
        assert self.contract is not None
        return self.contract.fixed_batch

    def named(self, batch: Batch) -> NamedBatch:
        """``batch`` keyed by the model's input names (what deployments run)."""
        assert self.contract is not None
        return named(self.contract.names, batch)

    def loader(self, split: str, batch_size: int, shuffle: bool = False, seed: int = 0) -> DataLoader:
        dataset = getattr(self, split)
        if dataset is None:
            raise ValueError(f"this dataset has no {split} split")
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)

    def calibration_inputs(self, samples: int, batch_size: int) -> list[Batch]:
        """The first ``samples`` calibration inputs (fixed order) in batches; with a fixed model batch, in
        batches of exactly that size (the last one padded by repeating its last sample)."""
        size = self.fixed_batch or batch_size
        inputs = [t[:samples] for t in self.calibration.tensors[:-1]]
        batches = [as_batch(chunk) for chunk in zip(*(t.split(size) for t in inputs), strict=True)]
        return [pad_to(b, size) for b in batches] if self.fixed_batch else batches

    def evaluation_inputs(self, count: int) -> Batch:
        """The first ``count`` evaluation inputs as one batch (latency and throughput inputs)."""
        out = []
        for t in self.evaluation.tensors[:-1]:
            if count > len(t):  # a small evaluation split: repeat it to fill the batch
                t = t.repeat((count + len(t) - 1) // len(t), *([1] * (t.dim() - 1)))
            out.append(t[:count].contiguous())
        return as_batch(out)
