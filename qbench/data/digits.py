"""scikit-learn's bundled digits (1797 8x8 grey images): qbench's offline default dataset."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import TensorDataset

from qbench.data.splits import DataSplits

_PIXEL_MAX = 16.0


def load_digits_splits(dataset_cfg, input_shape: tuple[int, int, int]) -> DataSplits:
    """Stratified, seeded split into train / calibration / evaluation, resized to the model's (C, H, W)."""
    digits = load_digits()
    images = digits.images.astype(np.float32) / _PIXEL_MAX
    labels = digits.target.astype(np.int64)
    n_eval, n_calib = dataset_cfg.evaluation_size, dataset_cfg.calibration_size
    if n_eval + n_calib >= len(labels):
        raise ValueError(
            f"dataset.evaluation_size + dataset.calibration_size = {n_eval + n_calib} leaves no training "
            f"data out of {len(labels)} digits images"
        )
    idx = np.arange(len(labels))
    rest, eval_idx = train_test_split(
        idx, test_size=n_eval, stratify=labels, random_state=dataset_cfg.split_seed
    )
    train_idx, calib_idx = train_test_split(
        rest, test_size=n_calib, stratify=labels[rest], random_state=dataset_cfg.split_seed + 1
    )
    x = _shape_for_model(torch.from_numpy(images), input_shape)
    x = (x - dataset_cfg.mean) / dataset_cfg.std
    y = torch.from_numpy(labels)

    def subset(indices: np.ndarray) -> TensorDataset:
        order = torch.from_numpy(np.sort(indices))
        return TensorDataset(x[order].contiguous(), y[order].contiguous())

    return DataSplits(
        train=subset(train_idx),
        calibration=subset(calib_idx),
        evaluation=subset(eval_idx),
        num_classes=10,
        input_shape=tuple(x.shape[1:]),
    )


def _shape_for_model(images: torch.Tensor, input_shape: tuple[int, int, int]) -> torch.Tensor:
    """(N, 8, 8) in [0, 1] -> (N, C, H, W): bilinear stretch to H x W (H may differ from W), grey replicated."""
    channels, height, width = input_shape
    x = images.unsqueeze(1)
    if (height, width) != tuple(x.shape[-2:]):
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
    return x.expand(-1, channels, -1, -1).contiguous()
