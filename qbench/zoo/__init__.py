"""Model registry: where a cell's FP32 reference model comes from.

``reference`` models are architectures qbench trains itself on the cell's dataset (offline default);
they are trained once per (model, dataset, recipe) and cached (see :mod:`qbench.zoo.cache`).
"""

from __future__ import annotations

SOURCES = ("reference",)
REFERENCE_ARCHS = ("digits_cnn", "resnet18", "mobilenet_v2")
