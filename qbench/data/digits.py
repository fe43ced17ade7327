"""scikit-learn's bundled digits (1797 8x8 grey images): qbench's offline default dataset."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from qbench.config.paths import cache_dir
from qbench.data.splits import DataSplits
from qbench.storage import cached

_PIXEL_MAX = 16.0
_NUM_DIGITS = 1797


def load_digits_splits(dataset_cfg, input_shape: tuple[int, int, int]) -> DataSplits:
    """Stratified, seeded split into train / calibration / evaluation, resized to the model's (C, H, W)."""
    n_eval, n_calib = dataset_cfg.evaluation_size, dataset_cfg.calibration_size
    if n_eval + n_calib >= _NUM_DIGITS:
        raise ValueError(
            f"dataset.evaluation_size + dataset.calibration_size = {n_eval + n_calib} leaves no training "
            f"data out of {_NUM_DIGITS} digits images"
        )
    split = _cached_split(n_eval, n_calib, dataset_cfg.split_seed)
    images = split["images"].astype(np.float32) / _PIXEL_MAX
    labels = split["labels"].astype(np.int64)
    train_idx, calib_idx, eval_idx = split["train"], split["calibration"], split["evaluation"]
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


def _cached_split(n_eval: int, n_calib: int, seed: int) -> dict[str, np.ndarray]:
    """The digits arrays and the split's indices, computed with scikit-learn once and then read from the cache.

    Why a cache for data that ships with scikit-learn: importing ``sklearn.datasets`` and ``model_selection``
    costs ~1.9 s, paid by every cell (each is a fresh process), for a 1797-image split that is the same each
    time; the cached arrays load in milliseconds. The key names scikit-learn's version (its bundled file and its
    splitter could change)."""
    path = cache_dir() / "data" / f"digits-sklearn{version('scikit-learn')}-e{n_eval}-c{n_calib}-s{seed}.npz"

    def build() -> dict[str, np.ndarray]:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        labels = digits.target.astype(np.int64)
        rest, eval_idx = train_test_split(np.arange(len(labels)), test_size=n_eval, stratify=labels,
                                          random_state=seed)
        train_idx, calib_idx = train_test_split(rest, test_size=n_calib, stratify=labels[rest],
                                                random_state=seed + 1)
        return {"images": digits.images, "labels": labels, "train": train_idx, "calibration": calib_idx,
                "evaluation": eval_idx}

    def save(arrays: dict[str, np.ndarray], tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to the temporary name
            np.savez(f, **arrays)

    def load(file: Path) -> dict[str, np.ndarray]:
        with np.load(file) as data:
            return {k: data[k] for k in data.files}

    return cached(path, build, save, load)[0]

