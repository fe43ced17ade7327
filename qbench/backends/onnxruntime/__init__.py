"""``onnxruntime``: the FP32 model exported to ONNX, quantized with ONNX Runtime's own tools.

- static (``ptq``, ``qat``): ``quant_pre_process`` then ``quantize_static`` in QDQ format (per-tensor or
  per-channel s8 weights; u8 activations, s8 when symmetric). Activation calibration maps from
  ``quant.activations.observer``: minmax -> MinMax, histogram -> Entropy, percentile -> Percentile. ORT has
  no MSE calibrator and no weight observers besides min/max: for those, and for QAT's learned scales, qbench's
  own scale/zero point are handed to ORT through its ``TensorQuantOverrides`` option (tag
  ``ort.activation_qparams`` / ``ort.weight_qparams`` says which was used). Weights under 8 bits (W4A8) deploy
  as int8 QDQ whose codes lie in the 4-bit range (qbench's scale, so the codes are the simulation's): the kernels
  are int8, the artifact stores int8 (tag ``ort.weight_codes``; packed size counts 8 bits), and u8 x s8 pairs of
  such codes cannot saturate int16 on any ISA (2 x 255 x 63 < 32767 up to 7 bits).
- ``quant.algorithm`` cle / adaround / qdrop (static): the simulated model's float network with its dequantized
  codes is exported (not the FP32 reference) and quantized with qbench's weight and activation scales, so ORT
  runs the codes the algorithm chose (``qbench.quant.simulate.snapped_float_model``).
- ``dynamic``: ``quantize_dynamic`` (ConvInteger / MatMulInteger + DynamicQuantizeLinear, u8 activations).
- ``weight_only``: ``MatMulNBitsQuantizer`` (4-bit, block size = ``group_size``) on MatMul; qbench first
  rewrites Gemm as MatMul + Add because the quantizer skips Gemm. Convolutions stay float (op mix says so).

Session options (threads, graph optimization level, providers) come from config and are recorded; the
optimized graph ORT actually runs is saved and inspected for the op mix.

Capabilities here (onnxruntime is imported for its providers, torch never); export in ``export``, ORT's
quantizers in ``quantize``, the session in ``deploy``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qbench.backends.base import ALL_LAYER_TYPES, HF_NOT_EXPORTED, Backend, cpu_runtime_reason
from qbench.config.layers import changes_grid

if TYPE_CHECKING:
    from qbench.config import QBenchConfig

# qbench's activation observers -> ORT's calibrators
CALIBRATORS = {"minmax": "MinMax", "histogram": "Entropy", "percentile": "Percentile"}
# algorithms whose result is integer codes on each layer's own grid (and float weights/biases/ReLU6 bounds changed
# by CLE): deployed from the simulated model's dequantized codes with qbench's scales (deploy.py)
CODE_ALGORITHMS = ("cle", "adaround", "qdrop")


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def native_layer_types(self, cfg: QBenchConfig) -> tuple[str, ...]:
        # MatMulNBits (weight-only) quantizes MatMul/Gemm: convolutions stay float in the deployed graph
        return ("Linear",) if cfg.quant.method == "weight_only" else ALL_LAYER_TYPES

    def unsupported_reason(self, cfg: QBenchConfig) -> str | None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        missing = [p for p in cfg.backend.providers if p not in available]
        if missing:
            return f"execution provider(s) {', '.join(missing)} unavailable here (available: {', '.join(available)})"
        if cfg.quant.algorithm not in ("rtn", *CODE_ALGORITHMS):
            return (f"quant.algorithm={cfg.quant.algorithm}: ONNX Runtime's quantizers round the exported FP32 weights "
                    "themselves (and AWQ/SmoothQuant's 1/s input scale is not exported): torch and torch_int8 run it")
        if cfg.quant.algorithm in CODE_ALGORITHMS and cfg.quant.method == "weight_only":
            return (f"quant.algorithm={cfg.quant.algorithm} weight-only: MatMulNBitsQuantizer computes its own scales "
                    "and rounds again (static W8A8/W4A8 deploys the algorithm's codes)")
        reason = cpu_runtime_reason(cfg, None, {"hf": HF_NOT_EXPORTED},
                                    "the onnxruntime backend picks its device through backend.providers; keep cpu")
        if reason:
            return reason
        q = cfg.quant
        w, a = q.weights, q.activations
        moved = changes_grid(q)
        if moved:
            return (f"quant.layers {'; '.join(moved)}: qbench deploys one ONNX Runtime grid per scheme (layers can "
                    "only be kept float, float: true)")
        if q.layers and cfg.model.source == "onnx":
            return "quant.layers names torch layers; a user ONNX file is quantized by ONNX Runtime alone"
        if q.layers and q.method == "weight_only":
            return ("quant.layers on weight-only MatMulNBits: per-layer overrides are not wired there (torch and "
                    "torch_int8 run them)")
        if cfg.model.source == "onnx" and q.method != "none":
            # without a torch module there is no qbench simulation to take scales from
            if q.method == "qat":
                return "QAT needs a trainable torch model; model=onnx is quantized by ONNX Runtime's tools only"
            if q.method in ("ptq", "dynamic") and w.observer != "minmax":
                return f"weights observer {w.observer}: ONNX Runtime quantizes weights with min/max only"
            if q.method == "ptq" and a.observer not in CALIBRATORS:
                return (f"activations observer {a.observer}: ONNX Runtime calibrates with "
                        f"{', '.join(CALIBRATORS)} only (qbench's own needs a torch model)")
        if cfg.backend.int8_path == "u8u8" and not w.symmetric:
            return "int8_path=u8u8 stores qbench's symmetric weight grid as u8 (zero point 128): symmetric weights only"
        if q.method in ("ptq", "qat"):
            if w.bits > 8 or a.bits != 8:
                return (f"W{w.bits}A{a.bits}: ONNX Runtime's CPU kernels for static quantization are int8 only "
                        "(QDQ with other widths would run dequantized in float; W<8 A8 deploys as int8 codes)")
            if w.granularity == "per_group":
                return "per-group weights: no int8 blocked-weight convolution/gemm kernel in ONNX Runtime (CPU)"
            if a.granularity != "per_tensor":
                return "per-channel activations: QLinear* kernels take one activation scale per tensor"
            if w.granularity == "per_channel" and not w.symmetric:
                return "asymmetric per-channel weights: QLinear* kernels need one weight zero point (symmetric)"
        elif q.method == "dynamic":
            if w.bits != 8 or a.bits != 8:
                return f"W{w.bits}A{a.bits} dynamic: ONNX Runtime's dynamic quantization is 8-bit"
            if a.symmetric:
                return "dynamic quantization in ONNX Runtime uses asymmetric uint8 activations (DynamicQuantizeLinear)"
            if w.granularity == "per_group":
                return "per-group weights are not supported by ONNX Runtime's dynamic quantization"
        elif q.method == "weight_only":
            if w.bits != 4:
                return f"{w.bits}-bit weight-only: MatMulNBits is used with 4-bit weights here"
            if w.granularity == "per_tensor":
                return "weight-only MatMulNBits quantizes per block or per channel, not per tensor"
            if w.granularity == "per_group" and (w.group_size < 16 or w.group_size & (w.group_size - 1)):
                return f"group_size={w.group_size}: MatMulNBits needs a power of two >= 16"
        return None
