"""Model registry: where a cell's FP32 reference model comes from.

``reference`` models are architectures qbench trains itself on the cell's dataset (offline default);
they are trained once per (model, dataset, recipe) and cached (see :mod:`qbench.zoo.cache`). Users' own
models come from torchvision, a checkpoint or an ONNX file (:mod:`qbench.zoo.models`).
"""

from __future__ import annotations

from qbench.config.names import REFERENCE_ARCHS, SOURCES

__all__ = ["REFERENCE_ARCHS", "SOURCES"]
