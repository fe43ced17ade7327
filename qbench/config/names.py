"""Names of every choice in qbench's configuration, free of heavy imports.

Validation (:mod:`qbench.config.validate`) checks values against these without importing the registries that
implement them (those import torch), so the orchestrating side stays torch-free; each registry imports its own
list from here, so a name is declared once.
"""

from __future__ import annotations

import pkgutil
from importlib.util import find_spec

BIT_RANGE = range(2, 17)
GRANULARITIES = ("per_tensor", "per_channel", "per_group")
ACTIVATION_GRANULARITIES = ("per_tensor", "per_channel")
OBSERVERS = ("minmax", "percentile", "mse", "histogram")
METHODS = ("none", "ptq", "dynamic", "weight_only", "qat")
ALGORITHMS = ("rtn", "gptq", "awq", "smoothquant")
FAULTS = ("none", "raise", "abort", "hang", "prepare")

# model sources and the architectures qbench trains itself (qbench/zoo)
SOURCES = ("reference", "torchvision", "checkpoint", "onnx", "hf")
POOLINGS = ("mean", "cls")
REFERENCE_ARCHS = ("digits_cnn", "resnet18", "mobilenet_v2")
# datasets (qbench/data)
DATASETS = ("digits", "imagefolder", "cifar10", "mnist", "fake", "lee_corpus", "word_similarity")
# text datasets (qbench/data/text.py), read from installed packages, and the tasks they feed
TEXT_DATASETS = {"lee_corpus": "language_modeling", "word_similarity": "embedding_similarity"}
# backends (qbench/backends)
BACKENDS = ("torch", "torch_int8", "onnxruntime", "openvino")
# tasks (qbench/tasks): every module there but these is a task plug-in named after its module
DEFAULT_TASK = "image_classification"
TASK_PACKAGE = "qbench.tasks"
NOT_TASKS = ("base",)
# int8 arithmetic (qbench/quant/int8_path.py)
INT8_PATHS = ("auto", "u8s8", "u8s8_reduce_range", "u8u8")
TARGET_ISAS = ("none", "host", "avx2", "avx512", "vnni", "amx")
QUANTIZED_ENGINES = ("x86", "fbgemm", "onednn")
GRAPH_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
# OpenVINO (qbench/backends/openvino): where its int8 model comes from, its hints
OPENVINO_INT8_SOURCES = ("qdq", "nncf")
OPENVINO_PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT")
OPENVINO_PRECISIONS = ("f32", "bf16", "f16")
STABILITY_METRICS = ("median_ci", "robust_cv", "cv")


def task_names() -> tuple[str, ...]:
    """The task plug-ins: modules of ``qbench.tasks`` listed from its folder, not imported (task modules import
    torch; validation must not). Adding ``qbench/tasks/NAME.py`` adds the task ``NAME``."""
    spec = find_spec(TASK_PACKAGE)  # imports the parent package (qbench) only
    folders = list(spec.submodule_search_locations or []) if spec else []
    return tuple(sorted(m.name for m in pkgutil.iter_modules(folders)
                        if not m.name.startswith("_") and m.name not in NOT_TASKS))
