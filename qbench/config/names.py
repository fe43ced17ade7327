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
ALGORITHMS = ("rtn", "gptq", "awq", "smoothquant", "cle", "adaround", "qdrop")
# quant.algorithm_options of each algorithm and their defaults (qbench/quant/algorithms.py, cle.py, adaround.py)
_ROUNDING = {"iterations": 300, "batch_size": 32, "lr": 0.01, "reg_weight": 0.01, "warmup": 0.2, "beta_start": 20.0,
             "beta_end": 2.0, "cle": False, "seed": 0}
ALGORITHM_DEFAULTS: dict[str, dict[str, object]] = {
    "rtn": {},
    "gptq": {"damp": 0.01, "block_size": 128, "act_order": True},
    "awq": {"grid": 20, "clip": True, "max_rows": 512, "seed": 0},
    "smoothquant": {"alpha": 0.5},
    "cle": {"bias_correction": True, "rounds": 20},
    "adaround": _ROUNDING,
    "qdrop": {**_ROUNDING, "drop_prob": 0.5},
}
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
BACKENDS = ("torch", "torch_int8", "onnxruntime", "openvino", "executorch")
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
# ExecuTorch (qbench/backends/executorch): whose observers calibrate the PT2E XNNPACK quantizer
EXECUTORCH_OBSERVERS = ("qbench", "xnnpack")
STABILITY_METRICS = ("median_ci", "robust_cv", "cv")
LATENCY_WINDOWS = ("adaptive", "fixed")
# MLPerf load scenarios (qbench/measure/scenarios.py) and how long each LoadGen run is
SCENARIOS = ("none", "single_stream", "multi_stream", "server", "offline")
SCENARIO_MODES = ("quick", "full")


def task_names() -> tuple[str, ...]:
    """The task plug-ins: modules of ``qbench.tasks`` listed from its folder, not imported (task modules import
    torch; validation must not). Adding ``qbench/tasks/NAME.py`` adds the task ``NAME``."""
    spec = find_spec(TASK_PACKAGE)  # imports the parent package (qbench) only
    folders = list(spec.submodule_search_locations or []) if spec else []
    return tuple(sorted(m.name for m in pkgutil.iter_modules(folders)
                        if not m.name.startswith("_") and m.name not in NOT_TASKS))


def algorithm_options_error(algorithm: str, options: object) -> str | None:
    """One line saying what is wrong with ``quant.algorithm`` / ``quant.algorithm_options``, or None. Options of
    another algorithm are allowed (one options dict can serve a sweep over algorithms); keys no algorithm knows
    are not."""
    if algorithm not in ALGORITHMS:
        return f"quant.algorithm {algorithm!r}: valid values: {', '.join(ALGORITHMS)}"
    known = {key for defaults in ALGORITHM_DEFAULTS.values() for key in defaults}
    unknown = sorted(set(options) - known)  # type: ignore[call-overload]
    if unknown:
        own = ", ".join(ALGORITHM_DEFAULTS[algorithm]) or "none"
        return (f"quant.algorithm_options {unknown}: unknown; valid keys for {algorithm}: {own} "
                f"(all algorithms: {', '.join(sorted(known))})")
    return None
