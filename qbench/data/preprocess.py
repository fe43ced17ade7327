"""What an image model expects: sample shape ``(C, H, W)`` and how images are resized, cropped, normalised.

torchvision models take their weights' own transforms (``weights.transforms()``: resize, centre crop,
mean, std); config values override them (``model.input_shape=[C,H,W]`` wins over ``model.input_size``,
and H may differ from W); ONNX models read the sample shape from the file (:mod:`qbench.data.onnx_inputs`).
How images reach H x W is stated in :func:`qbench.data.transforms.to_model_input`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qbench.config.inputs import InputContract

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """Input contract of a model: (C, H, W), and how images are brought to it (None = dataset default)."""

    input_shape: tuple[int, int, int]
    resize_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


def _override(model_cfg: Any, size: int, resize: int | None, mean: Any, std: Any, channels: int) -> Preprocess:
    size = model_cfg.input_size or size
    shape = (channels, size, size)
    if model_cfg.input_shape:
        c, h, w = (int(v) for v in model_cfg.input_shape)
        shape = (c, h, w)
    return Preprocess(
        input_shape=shape,
        resize_size=model_cfg.resize_size or resize,
        mean=tuple(model_cfg.mean) if model_cfg.mean else (tuple(mean) if mean else None),
        std=tuple(model_cfg.std) if model_cfg.std else (tuple(std) if std else None),
    )


def torchvision_preprocess(model_cfg: Any) -> Preprocess:
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(model_cfg.arch).DEFAULT
        t = weights.transforms()
        return _override(model_cfg, t.crop_size[0], t.resize_size[0], t.mean, t.std, 3)
    except (ValueError, AttributeError):  # an architecture without published weights
        return _override(model_cfg, 224, 256, IMAGENET_MEAN, IMAGENET_STD, 3)


def onnx_preprocess(model_cfg: Any, contract: InputContract | None = None) -> Preprocess:
    """Image preprocessing of an ONNX model whose one input is an image; raises InputError otherwise."""
    from qbench.config.inputs import InputError
    from qbench.data.onnx_inputs import onnx_contract

    contract = contract or onnx_contract(model_cfg)
    shape = contract.image_shape
    if shape is None:
        raise InputError(f"model.path={model_cfg.path} takes {contract.describe()}, not one image (C, H, W): "
                         "image datasets do not fit it; use dataset=fake")
    return Preprocess(shape, model_cfg.resize_size, tuple(model_cfg.mean) if model_cfg.mean else None,
                      tuple(model_cfg.std) if model_cfg.std else None)


def preprocess_for(model_cfg: Any) -> Preprocess:
    """How images are shaped for ``model_cfg`` whatever its source (ONNX: only when it takes one image)."""
    if model_cfg.source == "torchvision":
        return torchvision_preprocess(model_cfg)
    if model_cfg.source == "onnx":
        return onnx_preprocess(model_cfg)
    size = model_cfg.input_size or 224
    return _override(model_cfg, size, None, None, None, model_cfg.in_channels)
