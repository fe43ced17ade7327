"""``openvino``: the FP32 model as qbench's ONNX export (or ``model=onnx``'s file) compiled by OpenVINO for the CPU.

- static W8A8 (``ptq``, ``qat``), ``backend.int8_source``:
  - ``qdq`` (default): qbench's QDQ ONNX model, made exactly as the ``onnxruntime`` backend makes it (same
    export, same ``quantize_static`` call, qbench's own scales where ORT has no equivalent), so the integer grid is
    the simulation's and the deployment gap means what it means there. OpenVINO fuses the Q/DQ pairs into its
    int8 kernels.
  - ``nncf``: NNCF's ``quantize`` on the OpenVINO model with its own calibration over qbench's calibration split
    (``quant.calibration.samples`` samples, one per item). Observer mapping: weights min/max per channel or per
    tensor (NNCF's only weight estimator; other weight observers are skipped); activations ``minmax`` -> NNCF
    ``MINMAX`` (global min/max), ``percentile`` -> ``MEAN_QUANTILE`` (mean over samples of the
    1 - percentile/100 quantiles), ``histogram`` -> ``HISTOGRAM`` (NNCF's histogram range search, not qbench's
    KL criterion), ``mse`` -> skipped (no MSE search in NNCF). Symmetric activations -> preset ``PERFORMANCE``,
    asymmetric -> ``MIXED``; NNCF's fast bias correction stays on (its default); ``int8_path=u8s8_reduce_range``
    -> ``OverflowFix.ENABLE`` (7-bit weights), ``u8s8`` -> ``DISABLE``.
- ``weight_only``: NNCF's ``compress_weights`` (INT8_SYM/ASYM per channel, INT4_SYM/ASYM per group or per
  channel) on MatMul/Gemm layers only (convolutions ignored, ``all_layers=True`` so the last Linear is
  compressed too); the simulation quantizes the same Linear layers.
- ``dynamic`` and anything without an int8 x int8 kernel in the CPU plugin: skipped with the reason.

Recorded: ``INFERENCE_NUM_THREADS`` (= ``measure.threads.intra_op``), the performance hint, the inference
precision (``f32`` by default: on AMX CPUs the plugin would run float layers in bf16), and the precision each
layer actually ran in (``runtimePrecision`` of the compiled model's runtime graph) -> op mix and ``kernel``.

Capabilities here (torch-free: whether openvino/nncf are installed is looked up, not imported); deployment in
``deploy``, NNCF's algorithms in ``nncf_quant``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qbench.backends.base import (
    ALL_LAYER_TYPES,
    HF_NOT_EXPORTED,
    Backend,
    cpu_runtime_reason,
    missing_packages,
    static_int8_reason,
)

# ORT's calibrators (the qdq path calibrates with them when there is no torch model to take scales from)
from qbench.backends.onnxruntime import CALIBRATORS

if TYPE_CHECKING:
    from qbench.config import QBenchConfig

# qbench's activation observers NNCF has an equivalent for (qbench.backends.openvino.nncf_quant)
NNCF_OBSERVERS = ("minmax", "percentile", "histogram")


def missing_package(cfg: QBenchConfig) -> str | None:
    """The package this cell needs and this environment lacks (openvino; nncf for NNCF's paths), or None."""
    needed = ["openvino"]
    if cfg.quant.method == "weight_only" or (cfg.quant.method != "none" and cfg.backend.int8_source == "nncf"):
        needed.append("nncf")
    return missing_packages(needed, "openvino")


def _static_reason(cfg: QBenchConfig) -> str | None:
    return static_int8_reason(cfg, "OpenVINO's CPU int8 kernels") or _calibration_reason(cfg)


def _calibration_reason(cfg: QBenchConfig) -> str | None:
    """What the chosen int8 source (NNCF, or qbench's QDQ model) cannot calibrate as the scheme asks."""
    q = cfg.quant
    w, a = q.weights, q.activations
    if cfg.backend.int8_source == "nncf":
        if q.method == "qat":
            return "QAT's learned scales reach OpenVINO through qbench's QDQ model (backend.int8_source=qdq)"
        if w.observer != "minmax":
            return f"weights observer {w.observer}: NNCF estimates weight ranges with min/max only"
        if a.observer not in NNCF_OBSERVERS:
            return (f"activations observer {a.observer}: NNCF has {', '.join(NNCF_OBSERVERS)} range estimators "
                    "(backend.int8_source=qdq deploys qbench's own scales)")
    elif cfg.model.source == "onnx":  # no torch model: ORT's quantizer calibrates alone (as on onnxruntime)
        if q.method == "qat":
            return "QAT needs a trainable torch model; model=onnx is quantized by ONNX Runtime's tools or NNCF only"
        if w.observer != "minmax" or a.observer not in CALIBRATORS:
            return (f"observers {w.observer}/{a.observer}: without a torch model the QDQ path calibrates with "
                    f"ONNX Runtime's {', '.join(CALIBRATORS)} and min/max weights only")
    return None


def _weight_only_reason(cfg: QBenchConfig) -> str | None:
    w = cfg.quant.weights
    if w.bits == 8:
        if w.granularity != "per_channel":
            return f"8-bit {w.granularity} weights: NNCF compresses int8 weights per output channel only"
        return None
    if w.bits == 4:
        if w.granularity == "per_tensor":
            return "per-tensor 4-bit weights: NNCF compresses int4 weights per group or per channel"
        return None
    return f"{w.bits}-bit weight-only: NNCF's weight compression for OpenVINO's CPU plugin is int8 or int4"


class OpenVinoBackend(Backend):
    name = "openvino"

    def native_layer_types(self, cfg: QBenchConfig) -> tuple[str, ...]:
        # weight compression is applied to MatMul/Gemm only: convolutions stay float in the deployed graph
        return ("Linear",) if cfg.quant.method == "weight_only" else ALL_LAYER_TYPES

    def unsupported_reason(self, cfg: QBenchConfig) -> str | None:
        reason = cpu_runtime_reason(cfg, missing_package(cfg), {"hf": HF_NOT_EXPORTED},
                                    "the openvino backend runs on OpenVINO's CPU plugin")
        q = cfg.quant
        if reason or q.method == "none":
            return reason
        if q.algorithm != "rtn":
            return (f"quant.algorithm={q.algorithm}: the QDQ export and NNCF round the exported FP32 weights "
                    "themselves (AWQ/SmoothQuant's 1/s input scale is not exported): torch and torch_int8 run it")
        if q.exclude:
            return ("quant.exclude: layers kept in float are not carried into the QDQ/NNCF models yet "
                    "(torch_int8 deploys them)")
        if cfg.backend.int8_path == "u8u8":
            return "int8_path=u8u8 is ONNX Runtime's MLAS path; OpenVINO runs u8s8 or u8s8_reduce_range"
        if q.method in ("ptq", "qat"):
            return _static_reason(cfg)
        if q.method == "weight_only":
            return _weight_only_reason(cfg)
        return ("quant.method=dynamic: OpenVINO's CPU plugin quantizes activations at run time only inside "
                "weight-compressed FullyConnected layers, not as qbench's dynamic int8 scheme")
