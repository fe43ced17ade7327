"""Dataset registry: every dataset yields the same three splits (train / calibration / evaluation),
shaped for the model (its :class:`~qbench.data.preprocess.Preprocess`), with fixed seeds so all cells of a
suite see the same inputs."""

from __future__ import annotations

from typing import Any

from qbench.config.names import DATASETS, TEXT_DATASETS
from qbench.data.splits import DataSplits


class DataUnavailable(Exception):
    """The data is not where the config says (one-line message naming what to download and where)."""


def load_splits(dataset_cfg: Any, model_cfg: Any, need_train: bool = True) -> DataSplits:
    """Load ``dataset_cfg`` shaped for ``model_cfg`` (its input contract: channels, H x W, normalisation,
    named inputs for ``fake``); the training split is materialised only when ``need_train`` (reference
    training, QAT)."""
    from qbench.config.inputs import image_contract
    from qbench.data.onnx_inputs import onnx_contract
    from qbench.data.preprocess import onnx_preprocess, preprocess_for

    name = dataset_cfg.name
    if name not in DATASETS:
        raise DataUnavailable(f"dataset.name={name}: unknown; valid values: {', '.join(DATASETS)}")
    # the model's input contract: an ONNX file declares its inputs, torch models take one image
    contract = (onnx_contract(model_cfg) if model_cfg.source == "onnx"
                else image_contract(preprocess_for(model_cfg).input_shape))
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
    from qbench.config.inputs import InputError
    from qbench.data.preprocess import onnx_preprocess

    try:
        onnx_preprocess(model_cfg)
    except InputError as exc:
        return str(exc)
    return None


def check_dataset(dataset_cfg: Any, model_cfg: Any) -> str | None:
    """Why the files of ``dataset_cfg`` cannot be loaded here (one line), or None. Cheap: no decoding. (What the
    config asks of the data, e.g. a training split, is checked by qbench.orchestrate.preflight.)"""
    name = dataset_cfg.name
    if name in TEXT_DATASETS:
        from qbench.data.text import check_text_dataset

        return check_text_dataset(name)
    if name == "imagefolder":
        from qbench.data.imagefolder import check_imagefolder

        return check_imagefolder(dataset_cfg)
    if name in ("cifar10", "mnist"):
        from qbench.data.torchvision_sets import check_torchvision_set

        return check_torchvision_set(dataset_cfg)
    return None


__all__ = ["DATASETS", "DataSplits", "DataUnavailable", "check_dataset", "check_inputs_fit", "load_splits"]
