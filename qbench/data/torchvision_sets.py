"""CIFAR-10 and MNIST through torchvision's dataset classes (their file parsers), from ``dataset.root``.

Files are downloaded only with ``dataset.download=true``; otherwise a missing dataset is a one-line error
naming the files expected and where to get them. torchvision's CIFAR-10 class also checks the MD5 of the
official archive's files; qbench checks that the files exist and lets the parser fail loudly on a
malformed one, so that re-packed batches (and test fixtures written in the same format) load too.
Calibration comes from the training files, evaluation from the test files (seeded subsets).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import TensorDataset

from qbench.data.preprocess import Preprocess
from qbench.data.splits import DataSplits
from qbench.data.transforms import to_model_input

CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte"]
STATS = {"cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)), "mnist": ((0.1307,), (0.3081,))}


def _expected(cfg: Any) -> tuple[Path, list[str], str]:
    root = Path(cfg.root or ".")
    if cfg.name == "cifar10":
        return root / "cifar-10-batches-py", CIFAR_FILES, "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    return root / "MNIST" / "raw", MNIST_FILES, "https://ossci-datasets.s3.amazonaws.com/mnist/ (the 4 .gz files)"


def check_torchvision_set(cfg: Any) -> str | None:
    if not cfg.root:
        return f"dataset.root is required for {cfg.name}: the folder holding (or receiving) its files"
    folder, files, url = _expected(cfg)
    missing = [f for f in files if not (folder / f).is_file()]
    if missing and not cfg.download:
        return (f"{cfg.name} not found: expected {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''} "
                f"in {folder}; download {url} and extract it into {cfg.root}, or set dataset.download=true")
    return None


def _dataset(cfg: Any, train: bool) -> Any:
    import torchvision

    if cfg.name == "cifar10":

        class CIFAR10Files(torchvision.datasets.CIFAR10):
            """torchvision's CIFAR-10 parser, checking the files' presence rather than their MD5."""

            def _check_integrity(self) -> bool:
                return all((Path(self.root) / self.base_folder / name).is_file() for name, _ in
                           self.train_list + self.test_list)

            def _load_meta(self) -> None:
                meta = Path(self.root) / self.base_folder / self.meta["filename"]
                if meta.is_file():
                    with open(meta, "rb") as f:
                        self.classes = [c.decode() if isinstance(c, bytes) else c
                                        for c in pickle.load(f, encoding="latin1")[self.meta["key"]]]
                else:  # the label names are cosmetic: qbench scores by index
                    self.classes = [str(i) for i in range(10)]
                self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

        return CIFAR10Files(cfg.root, train=train, download=cfg.download)
    return torchvision.datasets.MNIST(cfg.root, train=train, download=cfg.download)


def _images(ds: Any, cfg: Any) -> tuple[torch.Tensor, torch.Tensor]:
    data = torch.as_tensor(ds.data)
    data = data.permute(0, 3, 1, 2) if cfg.name == "cifar10" else data.unsqueeze(1)  # -> N, C, H, W uint8
    return data, torch.as_tensor(ds.targets, dtype=torch.long)


def _subset(images: torch.Tensor, labels: torch.Tensor, count: int | None, generator: torch.Generator,
            preprocess: Preprocess, cfg: Any) -> TensorDataset:
    order = torch.randperm(len(labels), generator=generator)
    if count is not None:
        order = order[:count].sort().values
    mean, std = STATS[cfg.name]
    batches = [to_model_input(images[chunk], preprocess, mean, std) for chunk in order.split(1024)]
    return TensorDataset(torch.cat(batches), labels[order])


def load_torchvision_splits(cfg: Any, preprocess: Preprocess, with_train: bool = True) -> DataSplits:
    generator = torch.Generator().manual_seed(cfg.split_seed)
    train_images, train_labels = _images(_dataset(cfg, True), cfg)
    test_images, test_labels = _images(_dataset(cfg, False), cfg)
    calibration = _subset(train_images, train_labels, cfg.calibration_size, generator, preprocess, cfg)
    evaluation = _subset(test_images, test_labels, cfg.evaluation_size, generator, preprocess, cfg)
    train = _subset(train_images, train_labels, None, generator, preprocess, cfg) if with_train else None
    return DataSplits(train=train, calibration=calibration, evaluation=evaluation, num_classes=10,
                      input_shape=preprocess.input_shape)
