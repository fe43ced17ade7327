"""Dataset registry: every dataset yields the same three splits (train / calibration / evaluation),
shaped for the model (its :class:`~qbench.zoo.preprocess.Preprocess`), with fixed seeds so all cells of a
suite see the same inputs."""

from __future__ import annotations

from typing import Any

from qbench.data.splits import DataSplits

DATASETS = ("digits", "imagefolder", "cifar10", "mnist", "fake")


class DataUnavailable(Exception):
    """The data is not where the config says (one-line message naming what to download and where)."""


def load_splits(dataset_cfg: Any, model_cfg: Any, need_train: bool = True) -> DataSplits:
    """Load ``dataset_cfg`` shaped for ``model_cfg`` (channels, input size, normalisation); the training
    split is materialised only when ``need_train`` (reference training, QAT)."""
    name = dataset_cfg.name
    if name == "digits":
        from qbench.data.digits import load_digits_splits

        return load_digits_splits(dataset_cfg, model_cfg)
    from qbench.zoo.preprocess import preprocess_for

    preprocess = preprocess_for(model_cfg)
    if name == "fake":
        from qbench.data.fake import load_fake_splits

        return load_fake_splits(dataset_cfg, model_cfg, preprocess)
    if name == "imagefolder":
        from qbench.data.imagefolder import load_imagefolder_splits

        return load_imagefolder_splits(dataset_cfg, preprocess)
    if name in ("cifar10", "mnist"):
        from qbench.data.torchvision_sets import load_torchvision_splits

        return load_torchvision_splits(dataset_cfg, preprocess, with_train=need_train)
    raise DataUnavailable(f"dataset.name={name}: unknown; valid values: {', '.join(DATASETS)}")


# datasets with a training split (what reference models are trained on and QAT fine-tunes on)
WITH_TRAINING_SPLIT = ("digits", "cifar10", "mnist")


def check_dataset(dataset_cfg: Any, model_cfg: Any, quant_cfg: Any = None) -> str | None:
    """Why the data of ``dataset_cfg`` cannot be loaded here (one line), or None. Cheap: no decoding."""
    name = dataset_cfg.name
    # what the config asks of the data comes first: the per-dataset checks below return on their own
    if model_cfg.source == "reference" and name not in WITH_TRAINING_SPLIT:
        return (f"model={model_cfg.name} is a reference model that qbench trains on the dataset's training split, "
                f"and dataset.name={name} has none: use model=tv, checkpoint or onnx")
    if quant_cfg is not None and quant_cfg.method == "qat" and name not in WITH_TRAINING_SPLIT:
        return f"quant.method=qat fine-tunes on a training split, and dataset.name={name} has none"
    if name == "imagefolder":
        from qbench.data.imagefolder import check_imagefolder

        return check_imagefolder(dataset_cfg)
    if name in ("cifar10", "mnist"):
        from qbench.data.torchvision_sets import check_torchvision_set

        return check_torchvision_set(dataset_cfg)
    return None


__all__ = ["DATASETS", "DataSplits", "DataUnavailable", "check_dataset", "load_splits"]
