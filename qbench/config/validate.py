"""Validation of a composed config: ranges and choices, each failure one line naming the valid values."""

from __future__ import annotations

import fnmatch
from typing import Any

from omegaconf import DictConfig, OmegaConf

from qbench.config.identity import cell_name
from qbench.config.layers import LayerOverrideError, check_overrides
from qbench.config.names import (
    ACTIVATION_GRANULARITIES,
    ALGORITHMS,
    BACKENDS,
    BIT_RANGE,
    DATASETS,
    FAULTS,
    GRANULARITIES,
    LATENCY_WINDOWS,
    METHODS,
    OBSERVERS,
    POOLINGS,
    REFERENCE_ARCHS,
    SCENARIO_MODES,
    SCENARIOS,
    SOURCES,
    STABILITY_METRICS,
    TARGET_ISAS,
    TEXT_DATASETS,
    algorithm_options_error,
    task_names,
)
from qbench.config.schema import ModelConfig, QBenchConfig


class ConfigError(ValueError):
    """A configuration value is invalid; the message is one line that names the valid values."""


def _check_choice(key: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"{key}={value}: invalid value; valid values: {', '.join(valid)}")


def _check_positive(key: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{key}={value}: must be {bound}")


def _validate_tensor(prefix: str, tq: Any, granularities: tuple[str, ...]) -> None:
    if tq.bits not in BIT_RANGE:
        raise ConfigError(f"{prefix}.bits={tq.bits}: must be an integer in 2..16")
    _check_choice(f"{prefix}.granularity", tq.granularity, granularities)
    _check_choice(f"{prefix}.observer", tq.observer, OBSERVERS)
    if tq.granularity == "per_group":
        _check_positive(f"{prefix}.group_size", tq.group_size)
    if not 50.0 < tq.percentile <= 100.0:
        raise ConfigError(f"{prefix}.percentile={tq.percentile}: must be in (50, 100]")


def _validate_inputs(model: ModelConfig) -> None:
    """``model.input_shape`` and ``model.inputs``: well-formed, and meaningful for the model's source."""
    from qbench.config.inputs import InputError, parse_overrides

    shape = model.input_shape
    if shape is not None:
        if len(shape) != 3 or any(v <= 0 for v in shape):
            raise ConfigError(f"model.input_shape={list(shape)}: an image sample (C, H, W), three positive integers; "
                              "other inputs: model.inputs")
        channels = {"torchvision": 3, "reference": model.in_channels, "checkpoint": model.in_channels}
        if model.source in channels and shape[0] != channels[model.source]:
            raise ConfigError(f"model.input_shape={list(shape)}: the model takes {channels[model.source]} channels "
                              "(model.in_channels)")
    try:
        overrides = parse_overrides(model.inputs)
    except InputError as exc:
        raise ConfigError(str(exc)) from None
    if overrides and model.source != "onnx":
        raise ConfigError(f"model.inputs: names the inputs of an ONNX file (model=onnx); model.source={model.source} "
                          "takes one image: set model.input_shape=[C,H,W]")


def _validate_text(obj: QBenchConfig) -> None:
    """Text datasets feed their task only, and only transformers models (model=hf) read text."""
    model, dataset, task = obj.model, obj.dataset.name, obj.task.name
    if model.source == "hf":
        if not model.path:
            raise ConfigError("model.path is required for model=hf (a local transformers folder, or pkg:PACKAGE/SUB)")
        _check_choice("model.pooling", model.pooling, POOLINGS)
        if dataset not in TEXT_DATASETS:
            raise ConfigError(f"model={model.name} is a transformers model: it reads text "
                              f"(dataset={' or '.join(TEXT_DATASETS)}), not dataset={dataset}")
    elif dataset in TEXT_DATASETS:
        raise ConfigError(f"dataset={dataset} is text: it needs a transformers model (model=hf, minilm, smollm2), "
                          f"not model.source={model.source}")
    wanted = TEXT_DATASETS.get(dataset)
    if wanted and task != wanted:
        raise ConfigError(f"dataset={dataset} feeds task={wanted}, not task={task}")
    text_tasks = {t: d for d, t in TEXT_DATASETS.items()}
    if task in text_tasks and dataset != text_tasks[task]:
        raise ConfigError(f"task={task} reads dataset={text_tasks[task]}, not dataset={dataset}")


def validate(cfg: DictConfig) -> QBenchConfig:
    """Check ranges and choices of a composed config; return it as typed objects or raise ConfigError."""
    try:
        obj: QBenchConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    except Exception as exc:  # OmegaConf reports missing/mistyped values here
        raise ConfigError(one_line(exc)) from None

    _check_choice("task.name", obj.task.name, task_names())
    _check_choice("model.source", obj.model.source, SOURCES)
    if obj.model.source == "reference":
        _check_choice("model.arch", obj.model.arch, REFERENCE_ARCHS)
    if obj.model.source in ("checkpoint", "onnx") and not obj.model.path:
        raise ConfigError(f"model.path is required for model={obj.model.source} (the {obj.model.source} file)")
    _validate_inputs(obj.model)
    _check_choice("dataset.name", obj.dataset.name, DATASETS)
    _validate_text(obj)
    _check_choice("backend.name", obj.backend.name, BACKENDS)
    for key, valid in obj.backend.choices().items():
        _check_choice(f"backend.{key}", getattr(obj.backend, key), valid)
    _check_choice("quant.target_isa", obj.quant.target_isa, TARGET_ISAS)
    q = obj.quant
    _check_choice("quant.method", q.method, METHODS)
    _validate_tensor("quant.weights", q.weights, GRANULARITIES)
    _validate_tensor("quant.activations", q.activations, ACTIVATION_GRANULARITIES)
    _check_choice("quant.algorithm", q.algorithm, ALGORITHMS)
    if q.algorithm in ("gptq", "awq") and q.method != "weight_only":
        raise ConfigError(f"quant.algorithm={q.algorithm}: an error-compensating weight-only algorithm; "
                          f"quant.method={q.method} (use weight_only)")
    if q.algorithm == "smoothquant" and q.method not in ("ptq", "dynamic"):
        raise ConfigError(f"quant.algorithm=smoothquant moves activation outliers into the weights for W8A8: "
                          f"quant.method={q.method} quantizes no activations (use ptq or dynamic)")
    if q.algorithm in ("cle", "adaround") and q.method not in ("ptq", "weight_only"):
        raise ConfigError(f"quant.algorithm={q.algorithm}: a post-training algorithm; quant.method={q.method} "
                          "(use ptq or weight_only)")
    if q.algorithm == "qdrop" and q.method != "ptq":
        raise ConfigError(f"quant.algorithm=qdrop drops activation quantization while it reconstructs: "
                          f"quant.method={q.method} has no static activation quantization (use ptq)")
    message = algorithm_options_error(q.algorithm, q.algorithm_options)
    if message:
        raise ConfigError(message)
    try:
        check_overrides(q)
    except LayerOverrideError as exc:
        raise ConfigError(str(exc)) from None
    _check_positive("quant.calibration.samples", q.calibration.samples)
    _check_positive("quant.calibration.batch_size", q.calibration.batch_size)
    _check_positive("quant.qat.epochs", q.qat.epochs, allow_zero=True)
    _check_positive("dataset.calibration_size", obj.dataset.calibration_size)
    _check_positive("dataset.evaluation_size", obj.dataset.evaluation_size)
    lat = obj.measure.latency
    _check_positive("measure.latency.min_calls", lat.min_calls)
    _check_positive("measure.latency.batch_size", lat.batch_size)
    _check_positive("measure.latency.throughput_batch_size", lat.throughput_batch_size, allow_zero=True)
    _check_positive("measure.latency.warmup_calls", lat.warmup_calls, allow_zero=True)
    _check_positive("measure.timeout_s", obj.measure.timeout_s)
    _check_choice("measure.latency.stability_metric", lat.stability_metric, STABILITY_METRICS)
    _check_choice("measure.latency.window", lat.window, LATENCY_WINDOWS)
    _check_positive("measure.latency.stability_threshold", lat.stability_threshold)
    if obj.measure.threads.intra_op is not None:
        _check_positive("measure.threads.intra_op", obj.measure.threads.intra_op)
    _check_positive("measure.threads.inter_op", obj.measure.threads.inter_op)
    _check_positive("measure.energy.duration_s", obj.measure.energy.duration_s, allow_zero=True)
    _check_positive("measure.energy.cpu_watts_per_core", obj.measure.energy.cpu_watts_per_core)
    _check_choice("measure.scenario", obj.measure.scenario, SCENARIOS)
    _check_choice("measure.scenario_mode", obj.measure.scenario_mode, SCENARIO_MODES)
    _check_positive("measure.server.p99_ms", obj.measure.server.p99_ms)
    _check_positive("measure.server.search_steps", obj.measure.server.search_steps)
    _check_positive("measure.multi_stream_samples", obj.measure.multi_stream_samples)
    paired = obj.measure.paired
    for key in ("block_ms", "min_block_calls", "min_blocks", "max_blocks", "max_duration_s"):
        _check_positive(f"measure.paired.{key}", getattr(paired, key))
    _check_choice("debug.fault", obj.debug.fault, FAULTS)
    return obj


def fault_injected(cfg: QBenchConfig | DictConfig, fault: str) -> bool:
    """Test-only: whether ``debug.fault`` is ``fault`` for this cell (its name matches ``debug.fault_on``)."""
    return cfg.debug.fault == fault and fnmatch.fnmatch(cell_name(cfg), cfg.debug.fault_on)

def one_line(exc: BaseException) -> str:
    """Condense an OmegaConf/Hydra error chain to one line: the outer message, the root cause, the key."""
    def first(e: BaseException) -> str:
        text = str(e).strip()
        return text.splitlines()[0].strip() if text else type(e).__name__

    parts = [first(exc)]
    cause = exc.__cause__ or exc.__context__
    while cause is not None and (cause.__cause__ or cause.__context__) is not None:
        cause = cause.__cause__ or cause.__context__
    if cause is not None and first(cause) not in parts[0]:
        parts.append(first(cause))
    key = None
    for line in str(cause or exc).splitlines():
        if line.strip().startswith("full_key:"):
            key = line.split(":", 1)[1].strip()
    message = ": ".join(parts)
    return f"{key}: {message}" if key and key not in message else message
