"""Small files in the real on-disk formats of public datasets, written by tests (nothing is downloaded)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np


def write_mnist(root: Path, train: int, test: int, seed: int = 2) -> Path:
    """``root/MNIST/raw`` with idx files of random 28x28 digits, as torchvision's MNIST parser reads them."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", train), ("t10k", test)):
        images = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())
    return root
