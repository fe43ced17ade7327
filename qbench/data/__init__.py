"""Dataset registry: every dataset yields the same three splits (train / calibration / evaluation),
shaped for the model (its :class:`~qbench.zoo.preprocess.Preprocess`), with fixed seeds so all cells of a
suite see the same inputs."""

from __future__ import annotations

from typing import Any

from qbench.config.names import DATASETS
from qbench.data.splits import DataSplits


class DataUnavailable(Exception):
    """The data is not where the config says (one-line message naming what to download and where)."""


def load_splits(dataset_cfg: Any, model_cfg: Any, need_train: bool = True) -> DataSplits:
    """Load ``dataset_cfg`` shaped for ``model_cfg`` (its input contract: channels, H x W, normalisation,
    named inputs for ``fake``); the training split is materialised only when ``need_train`` (reference
    training, QAT)."""
    from qbench.zoo.inputs import model_contract
    from qbench.zoo.preprocess import onnx_preprocess, preprocess_for

    name = dataset_cfg.name
    if name not in DATASETS:
        raise DataUnavailable(f"dataset.name={name}: unknown; valid values: {', '.join(DATASETS)}")
    contract = model_contract(model_cfg)
    if name == "fake":
        from qbench.data.fake import load_fake_splits

        splits = load_fake_splits(dataset_cfg, model_cfg, contract)
    else:  # image datasets: the model must take one image
        preprocess = (onnx_preprocess(model_cfg, contract) if model_cfg.source == "onnx"
                      else preprocess_for(model_cfg))
        if name == "digits":
            from qbench.data.digits import load_digits_splits

            splits = load_digits_splits(dataset_cfg, preprocess.input_shape)
        elif name == "imagefolder":
            from qbench.data.imagefolder import load_imagefolder_splits

            splits = load_imagefolder_splits(dataset_cfg, preprocess)
        else:
            from qbench.data.torchvision_sets import load_torchvision_splits

            splits = load_torchvision_splits(dataset_cfg, preprocess, with_train=need_train)
    splits.contract = contract
    return splits


def check_inputs_fit(dataset_cfg: Any, model_cfg: Any) -> str | None:
    """Why an image dataset cannot feed the model (an ONNX file whose inputs are not one image), or None.
    Reads the file's input declarations only; ``fake`` fills any input."""
    if model_cfg.source != "onnx" or dataset_cfg.name == "fake":
        return None
    from qbench.zoo.inputs import InputError
    from qbench.zoo.preprocess import onnx_preprocess

    try:
        onnx_preprocess(model_cfg)
    except InputError as exc:
        return str(exc)
    return None


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


__all__ = ["DATASETS", "DataSplits", "DataUnavailable", "check_dataset", "check_inputs_fit", "load_splits"]
