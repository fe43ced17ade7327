"""What a model expects as input: sample shape and, for image datasets, resize / crop / normalisation.

torchvision models take their weights' own transforms (``weights.transforms()``: resize, centre crop,
mean, std); config values override them; ONNX models read the sample shape from the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
    return Preprocess(
        input_shape=(channels, size, size),
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


def onnx_preprocess(model_cfg: Any) -> Preprocess:
    """Sample shape from the ONNX file's first input (``model.input_shape`` overrides dynamic dims)."""
    if model_cfg.input_shape:
        c, h, w = (int(v) for v in model_cfg.input_shape)
    else:
        import onnx

        graph = onnx.load(model_cfg.path, load_external_data=False).graph
        initializers = {i.name for i in graph.initializer}
        first = next(i for i in graph.input if i.name not in initializers)
        dims = [d.dim_value if d.HasField("dim_value") else None for d in first.type.tensor_type.shape.dim]
        if len(dims) != 4 or any(d is None for d in dims[1:]):
            raise ValueError(
                f"model.path={model_cfg.path}: input {first.name!r} has shape {dims}; set model.input_shape=[C,H,W]"
            )
        c, h, w = dims[1], dims[2], dims[3]
    if h != w:
        raise ValueError(f"model.input_shape: qbench's image pipelines use square inputs, got {h}x{w}")
    return Preprocess((c, h, w), model_cfg.resize_size, tuple(model_cfg.mean) if model_cfg.mean else None,
                      tuple(model_cfg.std) if model_cfg.std else None)


def preprocess_for(model_cfg: Any) -> Preprocess:
    """The input contract of ``model_cfg`` whatever its source."""
    if model_cfg.source == "torchvision":
        return torchvision_preprocess(model_cfg)
    if model_cfg.source == "onnx":
        return onnx_preprocess(model_cfg)
    size = model_cfg.input_size or 224
    return _override(model_cfg, size, None, None, None, model_cfg.in_channels)
