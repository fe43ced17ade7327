"""Config schemas (registered in Hydra's ConfigStore) and validation with one-line errors.

The dataclasses below are the *public contract* of qbench's configuration: conf/config.yaml starts
from ``qbench_schema`` so every group file is merged into a typed node, a wrong type or an unknown key
fails at composition time, and :func:`validate` checks ranges and choices before any work starts.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from qbench.config import paths

BIT_RANGE = range(2, 17)
GRANULARITIES = ("per_tensor", "per_channel", "per_group")
ACTIVATION_GRANULARITIES = ("per_tensor", "per_channel")
OBSERVERS = ("minmax", "percentile", "mse", "histogram")
METHODS = ("none", "ptq", "dynamic", "weight_only", "qat")
FAULTS = ("none", "raise", "abort", "hang", "prepare")


class ConfigError(ValueError):
    """A configuration value is invalid; the message is one line that names the valid values."""


# ----------------------------------------------------------------------------------------------- schemas
@dataclass
class TrainRecipe:
    """How qbench trains a reference model on first use (part of the cache key)."""

    epochs: int = 20
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    warmup_epochs: int = 1
    augment: bool = True
    seed: int = 0


@dataclass
class ModelConfig:
    name: str = MISSING
    # reference: trained by qbench on the dataset (digits_cnn, resnet18, mobilenet_v2);
    # torchvision: any torchvision classification model by name (model=tv model.name=resnet50);
    # checkpoint: a user state dict for `arch` (torchvision name or package.module:Class);
    # onnx: a user ONNX file (onnxruntime backend only)
    source: str = "reference"
    arch: str = MISSING
    in_channels: int = 3
    # square input side; null = from the weights' transforms (torchvision) or the ONNX file
    input_size: int | None = 32
    num_classes: int = 10
    recipe: TrainRecipe = field(default_factory=TrainRecipe)
    # torchvision: load the standard weights (from TORCH_HOME; downloaded only if allow_download)
    pretrained: bool = False
    allow_download: bool = False
    # checkpoint / onnx: the file
    path: str | None = None
    # preprocessing overrides (null: the weights' own transforms, or the dataset's defaults)
    resize_size: int | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    # image sample shape (C, H, W), H may differ from W: overrides input_size (and the weights' crop); for
    # onnx, the first input's shape when the file leaves dimensions symbolic
    input_shape: list[int] | None = None
    # onnx: named inputs, {name: {shape: [...] (one sample, no batch dim), dtype, fill}}; null = what the file
    # declares. fill (dataset=fake): normal | uniform | zeros | ones | randint:LOW:HIGH (see qbench/zoo/inputs.py)
    inputs: Any = None


@dataclass
class DatasetConfig:
    name: str = MISSING
    # imagefolder / cifar10 / mnist: where the data is (class folders; torchvision's layout)
    root: str | None = None
    # imagefolder: sub-folder of root to evaluate on (e.g. val), and one to calibrate on (default: the
    # same folder, disjoint images); class_index: JSON {folder name: model output index}
    split: str | None = None
    calibration_split: str | None = None
    class_index: str | None = None
    # cifar10 / mnist: let torchvision download the files when they are missing
    download: bool = False
    # fake: number of classes of the random labels-free data (sample shape comes from the model)
    num_classes: int | None = None
    split_seed: int = 0
    # sizes of the held-out splits; the rest is the training split (reference models only)
    calibration_size: int = 180
    evaluation_size: int = 360
    # digits pixel range is 0..16; images are scaled to [0, 1] then normalised with these
    mean: float = 0.0
    std: float = 1.0


@dataclass
class TensorQuantConfig:
    bits: int = 8
    granularity: str = "per_tensor"
    group_size: int = 128
    symmetric: bool = True
    observer: str = "minmax"
    # used by the percentile observer only
    percentile: float = 99.99


@dataclass
class CalibrationConfig:
    samples: int = 128
    batch_size: int = 32


@dataclass
class QATConfig:
    epochs: int = 3
    lr: float = 0.001
    batch_size: int = 64
    learnable_scales: bool = False


@dataclass
class QuantConfig:
    method: str = "none"
    weights: TensorQuantConfig = field(default_factory=TensorQuantConfig)
    activations: TensorQuantConfig = field(default_factory=TensorQuantConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    qat: QATConfig = field(default_factory=QATConfig)
    # fnmatch patterns of layer names kept in floating point (e.g. ["conv1", "fc"])
    exclude: list[str] = field(default_factory=list)
    # reproduce this CPU's int8 arithmetic in the simulation (qbench/quant/int8_path.py): none (exact int32),
    # host, avx2 / avx512 (u8 x s8 pairs saturate in int16 on the u8s8 path), vnni, amx
    target_isa: str = "none"


@dataclass
class BackendConfig:
    name: str = MISSING
    device: str = "cpu"
    # onnxruntime: ONNX opset of the export, graph optimization level, execution providers in order
    onnx_opset: int = 18
    graph_optimization_level: str = "all"
    providers: list[str] = field(default_factory=lambda: ["CPUExecutionProvider"])
    # onnxruntime static QDQ: run ORT's quant_pre_process (shape inference + graph cleanup) first
    pre_process: bool = True
    # onnxruntime / torch_int8: int8 arithmetic: auto (from the CPU's ISA) | u8s8 | u8s8_reduce_range | u8u8
    # (qbench/quant/int8_path.py says what each means and what auto picks)
    int8_path: str = "auto"
    # torch_int8: PyTorch's quantized engine (x86 = fbgemm + oneDNN chosen per op; fbgemm; onednn)
    quantized_engine: str = "x86"


@dataclass
class ThreadsConfig:
    # null = the number of physical cores; the resolved value is recorded with every result
    intra_op: int | None = None
    inter_op: int = 1


@dataclass
class LatencyConfig:
    warmup_calls: int = 10
    warmup_s: float = 1.0
    min_calls: int = 100
    min_duration_s: float = 2.0
    max_duration_s: float = 30.0
    batch_size: int = 1
    # samples/s measured at this batch; 0 disables the throughput measurement
    throughput_batch_size: int = 32
    # stability gate (see qbench/measure/latency.py): median_ci | robust_cv | cv, and its threshold
    stability_metric: str = "median_ci"
    stability_threshold: float = 0.02
    retries: int = 1


@dataclass
class EnergyCosts:
    """Energy per operation in pJ (Horowitz, ISSCC 2014, 45 nm) for the energy model."""

    int8_add: float = 0.03
    int8_mult: float = 0.2
    int32_add: float = 0.1
    int32_mult: float = 3.1
    fp32_add: float = 0.9
    fp32_mult: float = 3.7
    dram_32bit_read: float = 640.0


@dataclass
class EnergyConfig:
    # the batch-1 call is repeated this long while energy counters (RAPL/NVML) or CPU time are read
    duration_s: float = 2.0
    # used only without a counter: energy = this process's CPU seconds x this figure (see README)
    cpu_watts_per_core: float = 7.5
    costs: EnergyCosts = field(default_factory=EnergyCosts)


@dataclass
class MeasureConfig:
    threads: ThreadsConfig = field(default_factory=ThreadsConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    energy: EnergyConfig = field(default_factory=EnergyConfig)
    eval_batch_size: int = 128
    # wall-clock limit for one cell's worker process
    timeout_s: float = 1800.0


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: str = "sqlite:///results/mlflow.db"
    experiment: str = "qbench"


@dataclass
class CheckConfig:
    """Gates of ``qbench check`` for a suite (``suite.check`` in suites/NAME.yaml; see qbench/regress/gates.py)."""

    # accuracy: fail when top-1 drops more than this many percentage points below the baseline's
    top1_tolerance_pt: float = 0.5
    # accuracy floor: top-1 as a fraction of the same run's FP32 top-1, per scheme label (w8a8-pc, w4-wo-pg32,
    # dyn-w8a8-pc, ...); a scheme not listed gets floor_8bit when its weights and activations have >= 8 bits
    floors: dict[str, float] = field(default_factory=dict)
    floor_8bit: float = 0.99
    # latency: relative loss of speed-up vs FP32 (quantized cells on real kernels), relative rise of an FP32
    # cell's own p50 (same host only; it only warns unless fp32_latency_fails: a shared machine's load moves
    # it, while the speed-up cancels it), and the significance level of the Mann-Whitney U test
    speedup_tolerance: float = 0.15
    latency_tolerance: float = 0.25
    fp32_latency_fails: bool = False
    alpha: float = 0.01
    # memory (peak RSS) and size (bytes on disk, packed bytes): a rise fails when it exceeds both bounds
    memory_tolerance_pct: float = 10.0
    memory_tolerance_mb: float = 50.0
    size_tolerance_pct: float = 1.0
    size_tolerance_mb: float = 0.0
    # deployment gap (real backends vs their simulation, checked on the run itself, no baseline needed): flag a
    # cell whose deployed top-1 falls more than deployment_gap_pt points below its simulation's, or whose
    # predictions agree with the simulation's on less than min_agreement_simulated of the samples; the summary
    # table, qbench compare and the HTML report flag it, qbench check fails its deployment_gap gate
    deployment_gap_pt: float = 1.0
    min_agreement_simulated: float = 0.98


@dataclass
class SuiteConfig:
    name: str | None = None
    description: str = ""
    # print the planned cells (grid + FP32 references, skips) and stop
    dry_run: bool = False
    # set by the suite sweeper for each cell it launches (not for users)
    run_dir: str | None = None
    parent_run_id: str | None = None
    # cells the launcher runs at once on this host (joblib n_jobs): > 1 tags latency as contended
    parallel_jobs: int = 1
    # regression gates of `qbench check` (not part of the cell hash: `suite` is not semantic)
    check: CheckConfig = field(default_factory=CheckConfig)


@dataclass
class DebugConfig:
    # test-only fault injection inside the cell's worker: none | raise | abort | hang, or prepare (training the
    # cell's reference model fails, even when it is cached), for the cells whose name matches fault_on (fnmatch)
    fault: str = "none"
    fault_on: str = "*"


@dataclass
class QBenchConfig:
    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    quant: QuantConfig = MISSING
    backend: BackendConfig = MISSING
    measure: MeasureConfig = MISSING
    tracking: TrackingConfig = MISSING
    suite: SuiteConfig = field(default_factory=SuiteConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    results_dir: str = "results"
    resume: bool = True


def register_configs() -> None:
    """Register the schema (``qbench_schema``, first in conf/config.yaml's defaults), the suites, and
    the ``qbench.stem`` resolver (file name without suffix, e.g. a user model's name from its path)."""
    ConfigStore.instance().store(name="qbench_schema", node=QBenchConfig)
    if not OmegaConf.has_resolver("qbench.stem"):
        OmegaConf.register_new_resolver("qbench.stem", lambda path: Path(str(path)).stem)
    register_suites()


def register_suites() -> None:
    """Make every ``suites/NAME.yaml`` reachable as ``+suite=NAME`` (user's ./suites wins over qbench's)."""
    cs = ConfigStore.instance()
    seen: set[str] = set()
    for directory in paths.suite_dirs():
        for path in sorted(directory.glob("*.yaml")):
            if path.stem in seen:
                continue
            seen.add(path.stem)
            cs.store(group="suite", name=path.stem, node=OmegaConf.load(path), package="_global_")


def available_suites() -> list[str]:
    return sorted({p.stem for d in paths.suite_dirs() for p in d.glob("*.yaml")})


def group_options(group: str) -> list[str]:
    """Names of the options of a config group (YAML files in conf/<group>/, suites for ``suite``)."""
    if group == "suite":
        return available_suites()
    directory = paths.CONF_DIR / group
    return sorted(p.stem for p in directory.glob("*.yaml")) if directory.is_dir() else []


# ------------------------------------------------------------------------------------------- validation
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
    from qbench.zoo.inputs import InputError, parse_overrides

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


def validate(cfg: DictConfig) -> QBenchConfig:
    """Check ranges and choices of a composed config; return it as typed objects or raise ConfigError."""
    from qbench import backends, data, zoo  # registries; imported late to keep config import light

    try:
        obj: QBenchConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    except Exception as exc:  # OmegaConf reports missing/mistyped values here
        raise ConfigError(one_line(exc)) from None

    _check_choice("model.source", obj.model.source, zoo.SOURCES)
    if obj.model.source == "reference":
        _check_choice("model.arch", obj.model.arch, zoo.REFERENCE_ARCHS)
    if obj.model.source in ("checkpoint", "onnx") and not obj.model.path:
        raise ConfigError(f"model.path is required for model={obj.model.source} (the {obj.model.source} file)")
    _validate_inputs(obj.model)
    _check_choice("dataset.name", obj.dataset.name, data.DATASETS)
    _check_choice("backend.name", obj.backend.name, backends.BACKENDS)
    from qbench.quant.int8_path import INT8_PATHS, TARGET_ISAS

    _check_choice("backend.int8_path", obj.backend.int8_path, INT8_PATHS)
    _check_choice("backend.quantized_engine", obj.backend.quantized_engine, ("x86", "fbgemm", "onednn"))
    _check_choice("quant.target_isa", obj.quant.target_isa, TARGET_ISAS)
    _check_choice("backend.graph_optimization_level", obj.backend.graph_optimization_level,
                  ("disable", "basic", "extended", "all"))
    q = obj.quant
    _check_choice("quant.method", q.method, METHODS)
    _validate_tensor("quant.weights", q.weights, GRANULARITIES)
    _validate_tensor("quant.activations", q.activations, ACTIVATION_GRANULARITIES)
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
    _check_choice("measure.latency.stability_metric", lat.stability_metric, ("median_ci", "robust_cv", "cv"))
    _check_positive("measure.latency.stability_threshold", lat.stability_threshold)
    if obj.measure.threads.intra_op is not None:
        _check_positive("measure.threads.intra_op", obj.measure.threads.intra_op)
    _check_positive("measure.threads.inter_op", obj.measure.threads.inter_op)
    _check_positive("measure.energy.duration_s", obj.measure.energy.duration_s, allow_zero=True)
    _check_positive("measure.energy.cpu_watts_per_core", obj.measure.energy.cpu_watts_per_core)
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


# ----------------------------------------------------------------------------------------- labels & hash
def scheme_label(quant: QuantConfig | DictConfig) -> str:
    """Short, honest label of a scheme derived from its values (not from the preset name).

    e.g. ``fp32``, ``w8a8``, ``w8a8-pc``, ``w4a8-pc``, ``w4-wo-pg128``, ``dyn8-pc``, ``qat-w4a8-pc``.
    """
    method = quant.method
    if method == "none":
        return "fp32"
    w, a = quant.weights, quant.activations

    def gran(tq: Any) -> str:
        return {"per_tensor": "", "per_channel": "-pc", "per_group": f"-pg{tq.group_size}"}[tq.granularity]

    if method == "weight_only":
        label = f"w{w.bits}-wo{gran(w)}"
    elif method == "dynamic":
        label = f"dyn-w{w.bits}a{a.bits}{gran(w)}"
    else:
        label = f"w{w.bits}a{a.bits}{gran(w)}"
        if method == "qat":
            label = f"qat-{label}"
    if w.observer != "minmax":
        label += f"-{w.observer}"
    if method in ("ptq", "qat") and a.observer != "minmax":
        label += f"-act{a.observer}"
    target_isa = getattr(quant, "target_isa", "none")
    if target_isa != "none":
        label += f"@{target_isa}"
    return label


def cell_name(cfg: QBenchConfig | DictConfig) -> str:
    """Readable cell name, e.g. ``resnet18/w8a8-pc/onnxruntime``; the dataset is added when not digits,
    the device when not cpu, and explicit thread counts / latency batch sizes as ``/t1``, ``/b8``."""
    model = cfg.model.name if cfg.dataset.name == "digits" else f"{cfg.model.name}@{cfg.dataset.name}"
    name = f"{model}/{scheme_label(cfg.quant)}/{cfg.backend.name}"
    if cfg.backend.device != "cpu":
        name += f"@{cfg.backend.device}"
    int8_path = getattr(cfg.backend, "int8_path", "auto")
    if int8_path != "auto":
        name += f"/{int8_path}"
    if cfg.measure.threads.intra_op is not None:
        name += f"/t{cfg.measure.threads.intra_op}"
    if cfg.measure.latency.batch_size != 1:
        name += f"/b{cfg.measure.latency.batch_size}"
    return name


# Keys that do not change what a cell computes: excluded from its identity hash.
_NON_SEMANTIC = ("tracking", "suite", "results_dir", "resume", "hydra")


def cell_config_dict(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config of a cell as plain data, without Hydra's own node."""
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    assert isinstance(container, dict)
    container.pop("hydra", None)
    return container


def cell_hash(cfg: DictConfig | dict[str, Any]) -> str:
    """Identity of a cell: a hash of everything that changes what it computes or measures."""
    data = cfg if isinstance(cfg, dict) else cell_config_dict(cfg)
    semantic = {k: v for k, v in data.items() if k not in _NON_SEMANTIC}
    blob = json.dumps(semantic, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts to dotted keys (``quant.weights.bits``) for MLflow params."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{full}."))
        else:
            out[full] = value
    return out
