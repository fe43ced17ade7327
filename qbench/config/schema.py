"""Config schemas, registered in Hydra's ConfigStore as ``qbench_schema``.

The dataclasses below are the *public contract* of qbench's configuration: conf/config.yaml starts
from ``qbench_schema`` so every group file is merged into a typed node, and a wrong type or an unknown key
fails at composition time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from qbench.config.names import DEFAULT_TASK


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
    """The network under test and where its weights come from (``model=`` group, conf/model/)."""

    name: str = MISSING
    # reference: trained by qbench on the dataset (digits_cnn, resnet18, mobilenet_v2);
    # torchvision: any torchvision classification model by name (model=tv model.name=resnet50);
    # checkpoint: a user state dict for `arch` (torchvision name or package.module:Class);
    # onnx: a user ONNX file (onnxruntime backend only);
    # hf: a local transformers folder (model.path; pkg:PACKAGE/SUB = a folder inside an installed package)
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
    # declares. fill (dataset=fake): normal | uniform | zeros | ones | randint:LOW:HIGH (see qbench/data/onnx_inputs.py)
    inputs: Any = None
    # hf: a GGUF file inside model.path (dequantized to float by transformers; needs gguf)
    gguf_file: str | None = None
    # hf encoders: how token embeddings become one vector (mean | cls); causal LMs have none
    pooling: str = "mean"
    # fnmatch patterns of layers that stay float whatever the scheme (e.g. a language model's lm_head); a scheme's
    # quant.exclude adds to them, and model.keep_float=[] quantizes every layer
    keep_float: list[str] = field(default_factory=list)


@dataclass
class TaskConfig:
    """What a cell measures the model on (qbench/tasks/NAME.py): its data splits, inputs, metrics, workloads."""

    name: str = MISSING
    # settings the task reads itself (conf/task/NAME.yaml documents them), e.g. a sequence length
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DatasetConfig:
    """Calibration/evaluation (and training) data of a cell (``dataset=`` group, conf/dataset/)."""

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
    """How one tensor kind (weights or activations) is quantized: grid, granularity, range observer."""

    bits: int = 8
    granularity: str = "per_tensor"
    group_size: int = 128
    symmetric: bool = True
    observer: str = "minmax"
    # used by the percentile observer only
    percentile: float = 99.99


@dataclass
class CalibrationConfig:
    """How many calibration samples PTQ observes, in batches of this size."""

    samples: int = 128
    batch_size: int = 32


@dataclass
class QATConfig:
    """Quantization-aware fine-tuning (``quant.method=qat``)."""

    epochs: int = 3
    lr: float = 0.001
    batch_size: int = 64
    learnable_scales: bool = False


@dataclass
class QuantConfig:
    """The quantization scheme of a cell (``quant=`` group, conf/quant/)."""

    method: str = "none"
    weights: TensorQuantConfig = field(default_factory=TensorQuantConfig)
    activations: TensorQuantConfig = field(default_factory=TensorQuantConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    qat: QATConfig = field(default_factory=QATConfig)
    # fnmatch patterns of layer names kept in floating point (e.g. ["conv1", "fc"])
    exclude: list[str] = field(default_factory=list)
    # per-layer overrides (qbench/config/layers.py): fnmatch pattern -> {bits, granularity, activation_bits, float},
    # e.g. {"features.0.*": {bits: 8}, "classifier.*": {float: true}}; later patterns win where they overlap
    layers: dict[str, Any] = field(default_factory=dict)
    # how weights are rounded to the grid (qbench/quant/algorithms.py): rtn (round to nearest) | gptq | awq
    # (error-compensating, weight-only) | smoothquant (activation outliers moved into weights, for W8A8) | cle
    # (cross-layer equalization + bias correction) | adaround | qdrop (learned rounding, every Conv2d/Linear);
    # options, e.g. {damp: 0.01, block_size: 128} (gptq), {grid: 20} (awq), {alpha: 0.5} (smoothquant),
    # {iterations: 300, cle: true} (adaround); each algorithm's options: ALGORITHM_DEFAULTS in config/names.py
    algorithm: str = "rtn"
    algorithm_options: dict[str, Any] = field(default_factory=dict)
    # reproduce this CPU's int8 arithmetic in the simulation (qbench/quant/int8_path.py): none (exact int32),
    # host, avx2 / avx512 (u8 x s8 pairs saturate in int16 on the u8s8 path), vnni, amx
    target_isa: str = "none"


@dataclass
class BackendConfig:
    """The runtime that deploys the cell (``backend=`` group, conf/backend/). Settings of one backend only live in
    its own subclass (qbench/backends/NAME/config.py), so they are in that backend's cells' hash and params only."""

    name: str = MISSING
    device: str = "cpu"

    def choices(self) -> dict[str, tuple[str, ...]]:
        """Valid values of this backend's settings that take a name, checked by validation."""
        return {}


@dataclass
class ThreadsConfig:
    """CPU threads of the runtime while measuring."""

    # null = the number of physical cores; the resolved value is recorded with every result
    intra_op: int | None = None
    inter_op: int = 1


@dataclass
class LatencyConfig:
    """The latency protocol (warm-up, window, stability gate; see qbench/measure/latency.py)."""

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
    # adaptive: past min_calls / min_duration_s the window goes on until the gate is met (or max_duration_s);
    # fixed: it stops there and is retried up to `retries` times
    window: str = "adaptive"


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
    """Energy: measured by a counter where one exists, else estimated (qbench/measure/energy.py)."""

    # the batch-1 call is repeated this long while energy counters (RAPL/NVML) or CPU time are read
    duration_s: float = 2.0
    # used only without a counter: energy = this process's CPU seconds x this figure (see README)
    cpu_watts_per_core: float = 7.5
    costs: EnergyCosts = field(default_factory=EnergyCosts)


@dataclass
class PairedConfig:
    """Paired speed-up (qbench/measure/paired.py): a quantized cell on a real backend also times its FP32
    reference on the same backend, interleaved in blocks; stops as the latency window does (its threshold)."""

    enabled: bool = True
    # each block runs about this long (its call count set from the warm-up calls), at least min_block_calls calls;
    # its second half counts (the first absorbs the switch from the other model)
    block_ms: float = 100.0
    min_block_calls: int = 5
    # the CI is read from 16 blocks (8 ABBA units) on: a moving-block bootstrap of fewer has too few distinct
    # resamples to trust
    min_blocks: int = 16
    max_blocks: int = 40
    max_duration_s: float = 10.0


@dataclass
class ServerScenarioConfig:
    """The Server load scenario (``measure.scenario=server``): its p99 latency bound and the QPS search."""

    p99_ms: float = 10.0
    # LoadGen Server runs of the bisection over the target QPS
    search_steps: int = 6


@dataclass
class MeasureConfig:
    """What is measured and how (``measure=`` group: default, quick)."""

    threads: ThreadsConfig = field(default_factory=ThreadsConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    energy: EnergyConfig = field(default_factory=EnergyConfig)
    paired: PairedConfig = field(default_factory=PairedConfig)
    # an MLPerf load scenario run through LoadGen after the latency window (qbench/measure/scenarios.py):
    # none | single_stream | multi_stream | server | offline; quick caps each LoadGen run (CI), full keeps its rules
    scenario: str = "none"
    scenario_mode: str = "quick"
    server: ServerScenarioConfig = field(default_factory=ServerScenarioConfig)
    multi_stream_samples: int = 8
    # per-layer kernel times from the runtime's profiler, written to layer_times.json (qbench tune's latency stage;
    # backends with a profile: onnxruntime); a separate session after the latency windows
    layer_profile: bool = False
    eval_batch_size: int = 128
    # wall-clock limit for one cell's worker process
    timeout_s: float = 1800.0


@dataclass
class TrackingConfig:
    """Where results are logged (MLflow tracking URI and experiment)."""

    enabled: bool = True
    uri: str = "sqlite:///results/mlflow.db"
    experiment: str = "qbench"


@dataclass
class CheckConfig:
    """Gates of ``qbench check`` for a suite (``suite.check`` in suites/NAME.yaml; see qbench/regress/gates.py)."""

    # accuracy: fail when top-1 drops more than this many percentage points below the baseline's
    top1_tolerance_pt: float = 0.5
    # the task metric of other tasks (perplexity, Spearman ρ): fail when it is this many % worse than the baseline's
    task_tolerance_pct: float = 1.0
    # accuracy floor: the task metric as a fraction of the same run's FP32 cell's (acc_pct_fp32), per scheme label
    # (w8a8-pc, w4-wo-pg32, dyn-w8a8-pc, ...); a scheme not listed gets floor_8bit when its weights and
    # activations have >= 8 bits
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
    """A sweep of cells (``+suite=NAME``, suites/NAME.yaml): not part of a cell's hash."""

    name: str | None = None
    description: str = ""
    # print the planned cells (grid + FP32 references, skips) and stop
    dry_run: bool = False
    # set by the suite sweeper for each cell it launches (not for users)
    run_dir: str | None = None
    parent_run_id: str | None = None
    # cells the launcher runs at once on this host (joblib n_jobs): > 1 tags latency as contended
    parallel_jobs: int = 1
    # cells run as forks of a server that has imported torch/onnxruntime (qbench/orchestrate/forkserver.py) instead
    # of a fresh interpreter each; false, off Linux, or when the server cannot start: spawned workers
    fork_server: bool = True
    # regression gates of `qbench check` (not part of the cell hash: `suite` is not semantic)
    check: CheckConfig = field(default_factory=CheckConfig)


@dataclass
class DebugConfig:
    """Test-only fault injection."""

    # test-only fault injection inside the cell's worker: none | raise | abort | hang, or prepare (training the
    # cell's reference model fails, even when it is cached), for the cells whose name matches fault_on (fnmatch)
    fault: str = "none"
    fault_on: str = "*"


@dataclass
class QBenchConfig:
    """One cell: task x model x dataset x quant scheme x backend x measure settings."""

    # a default, not MISSING: a config saved before tasks existed is an image classification cell
    task: TaskConfig = field(default_factory=lambda: TaskConfig(name=DEFAULT_TASK))
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
