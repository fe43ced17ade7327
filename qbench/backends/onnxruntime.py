"""ONNX Runtime: the FP32 model exported to ONNX, quantized with ONNX Runtime's own tools.

- static (``ptq``, ``qat``): ``quant_pre_process`` then ``quantize_static`` in QDQ format (per-tensor or
  per-channel s8 weights; u8 activations, s8 when symmetric). Activation calibration maps from
  ``quant.activations.observer``: minmax -> MinMax, histogram -> Entropy, percentile -> Percentile. ORT has
  no MSE calibrator and no weight observers besides min/max: for those, and for QAT's learned scales, qbench's
  own scale/zero point are handed to ORT through its ``TensorQuantOverrides`` option (tag
  ``ort.activation_qparams`` / ``ort.weight_qparams`` says which was used).
- ``dynamic``: ``quantize_dynamic`` (ConvInteger / MatMulInteger + DynamicQuantizeLinear, u8 activations).
- ``weight_only``: ``MatMulNBitsQuantizer`` (4-bit, block size = ``group_size``) on MatMul; qbench first
  rewrites Gemm as MatMul + Add because the quantizer skips Gemm. Convolutions stay float (op mix says so).

Session options (threads, graph optimization level, providers) come from config and are recorded; the
optimized graph ORT actually runs is saved and inspected for the op mix.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qbench.backends.base import Backend, DeployContext, Deployment
from qbench.backends.onnx_export import cached_reference_export, export_onnx

if TYPE_CHECKING:
    from torch import nn

    from qbench.config import QBenchConfig
    from qbench.data.batching import Batch

log = logging.getLogger("qbench.ort")
_CALIBRATORS = {"minmax": "MinMax", "histogram": "Entropy", "percentile": "Percentile"}
_OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
               "all": "ORT_ENABLE_ALL"}


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def unsupported_reason(self, cfg: QBenchConfig) -> str | None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        missing = [p for p in cfg.backend.providers if p not in available]
        if missing:
            return f"execution provider(s) {', '.join(missing)} unavailable here (available: {', '.join(available)})"
        if cfg.backend.device != "cpu":
            return "the onnxruntime backend picks its device through backend.providers; keep backend.device=cpu"
        q = cfg.quant
        w, a = q.weights, q.activations
        if cfg.model.source == "onnx" and q.method != "none":
            # without a torch module there is no qbench simulation to take scales from
            if q.method == "qat":
                return "QAT needs a trainable torch model; model=onnx is quantized by ONNX Runtime's tools only"
            if q.method in ("ptq", "dynamic") and w.observer != "minmax":
                return f"weights observer {w.observer}: ONNX Runtime quantizes weights with min/max only"
            if q.method == "ptq" and a.observer not in _CALIBRATORS:
                return (f"activations observer {a.observer}: ONNX Runtime calibrates with "
                        f"{', '.join(_CALIBRATORS)} only (qbench's own needs a torch model)")
        if cfg.backend.int8_path == "u8u8" and not w.symmetric:
            return "int8_path=u8u8 stores qbench's symmetric weight grid as u8 (zero point 128): symmetric weights only"
        if q.method in ("ptq", "qat"):
            if w.bits != 8 or a.bits != 8:
                return (f"W{w.bits}A{a.bits}: ONNX Runtime's CPU kernels for static quantization are int8 only "
                        "(QDQ with other widths would run dequantized in float)")
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

    def deploy(self, ctx: DeployContext) -> Deployment:
        import onnxruntime as ort

        from qbench.data.batching import tensors_of
        from qbench.measure.opmix import onnx_op_mix
        from qbench.quant.simulate import fold_batchnorm, unwrap_simulated

        cfg = ctx.cfg
        method = cfg.quant.method
        shape = ctx.splits.input_shape
        tags: dict[str, str] = {"ort.version": ort.__version__, "ort.opset": str(cfg.backend.onnx_opset)}
        t0 = time.perf_counter()
        if ctx.onnx_path is not None:  # a user ONNX model
            float_path = constants_to_initializers(ctx.onnx_path, ctx.workdir / "model_input.onnx")
        elif method == "qat":
            assert ctx.simulated_model is not None
            float_path = export_onnx(unwrap_simulated(ctx.simulated_model), shape, ctx.workdir / "model_qat_float.onnx",
                                     cfg.backend.onnx_opset)
        else:
            float_path = cached_reference_export(cfg.model, cfg.dataset, lambda: fold_batchnorm(ctx.fp32_model), shape,
                                                 cfg.backend.onnx_opset)
        metrics = {"time.export_s": time.perf_counter() - t0}

        t0 = time.perf_counter()
        if method == "none":
            deployed = ctx.workdir / "model_fp32.onnx"
            shutil.copyfile(float_path, deployed)
            tags["ort.quantization"] = "none"
        elif method in ("ptq", "qat"):
            deployed = _quantize_static(ctx, float_path, tags)
        elif method == "dynamic":
            deployed = _quantize_dynamic(ctx, float_path, tags)
        else:
            deployed = _quantize_weight_only(ctx, float_path, tags)
        metrics["time.ort_quantize_s"] = time.perf_counter() - t0

        session, optimized = _session(cfg, deployed, ctx.workdir)
        tags["ort.providers"] = ",".join(session.get_providers())
        tags["ort.graph_optimization_level"] = cfg.backend.graph_optimization_level
        layers = ctx.layer_counts()
        mix_metrics, mix_tags = onnx_op_mix(optimized, layers)
        metrics.update(mix_metrics)
        tags.update(mix_tags)
        kernel = _kernel(method, cfg, mix_metrics)
        output_name = session.get_outputs()[0].name
        input_names = _input_names(ctx, [i.name for i in session.get_inputs()])

        def prepare(batch: Batch) -> dict[str, np.ndarray]:
            return {name: np.ascontiguousarray(t.numpy()) for name, t in zip(input_names, tensors_of(batch),
                                                                             strict=True)}

        def run(feed: dict[str, np.ndarray]) -> Any:
            return session.run([output_name], feed)

        import torch

        return Deployment(
            kernel=kernel,
            prepare=prepare,
            run=run,
            to_logits=lambda out: torch.from_numpy(np.asarray(out[0])),
            artifacts=[deployed],
            tags=tags,
            metrics=metrics,
            runtime=session,
        )


def _kernel(method: str, cfg: QBenchConfig, mix: dict[str, float]) -> str:
    from qbench.measure.opmix import integer_kernel

    if method == "none":
        return "fp32"
    return integer_kernel(mix, "int4" if method == "weight_only" else "int8")


def _session(cfg: QBenchConfig, model_path: Path, workdir: Path) -> tuple[Any, Path]:
    import onnxruntime as ort

    from qbench.config.threads import resolve_threads

    intra, inter = resolve_threads(cfg)
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra
    options.inter_op_num_threads = inter
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    level = _OPT_LEVELS[cfg.backend.graph_optimization_level]
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    options.log_severity_level = 3  # errors only: serializing the optimized graph warns about NCHWc layouts
    optimized = workdir / "optimized.onnx"
    options.optimized_model_filepath = str(optimized)
    session = ort.InferenceSession(str(model_path), options, providers=list(cfg.backend.providers))
    return session, optimized


def _input_names(ctx: DeployContext, declared: list[str]) -> list[str]:
    """The names to feed, in the contract's order: a user file's own names; qbench's exports have one input."""
    if ctx.onnx_path is None:
        return declared[:1]
    assert ctx.splits.contract is not None
    names = list(ctx.splits.contract.names)
    missing = [n for n in names if n not in declared]
    if missing:
        raise RuntimeError(f"the deployed model has no input {missing[0]!r} (inputs: {', '.join(declared)})")
    return names


class _CalibrationReader:
    """ORT's CalibrationDataReader over qbench's calibration split (same samples as the simulation), feeding
    every named input; with a fixed model batch, every batch has exactly that many samples."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)

    def rewind(self) -> None:  # part of ORT's reader protocol; calibration reads once
        raise NotImplementedError


def _calibration_feeds(ctx: DeployContext, model_path: Path) -> list[dict[str, np.ndarray]]:
    import onnx

    from qbench.data.batching import tensors_of

    graph = onnx.load(str(model_path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    names = _input_names(ctx, [i.name for i in graph.input if i.name not in initializers])
    cal = ctx.cfg.quant.calibration
    samples = min(cal.samples, len(ctx.splits.calibration))
    return [{name: t.numpy() for name, t in zip(names, tensors_of(batch), strict=True)}
            for batch in ctx.splits.calibration_inputs(samples, cal.batch_size)]


def constants_to_initializers(src: Path, dst: Path) -> Path:
    """Copy of ``src`` where tensors held by Constant nodes become initializers: ORT's quantizers only
    treat initializers as weights, and some exporters keep weights in Constant nodes."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    kept, moved = [], 0
    for node in model.graph.node:
        value = next((a.t for a in node.attribute if a.name == "value" and a.type == onnx.AttributeProto.TENSOR),
                     None)
        if node.op_type == "Constant" and value is not None and len(node.output) == 1:
            model.graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(value), node.output[0]))
            moved += 1
        else:
            kept.append(node)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    onnx.save(model, str(dst))
    return dst


def _pre_process(ctx: DeployContext, float_path: Path) -> Path:
    if not ctx.cfg.backend.pre_process:
        return float_path
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = ctx.workdir / "model_preprocessed.onnx"
    quant_pre_process(str(float_path), str(out), skip_symbolic_shape=False)
    return out


def _quantize_static(ctx: DeployContext, float_path: Path, tags: dict[str, str]) -> Path:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    q = ctx.cfg.quant
    w, a = q.weights, q.activations
    overrides: dict[str, list[dict[str, Any]]] = {}
    sim = ctx.simulated_model
    u8_weights = ctx.int8_path == "u8u8" or not w.symmetric
    # 7-bit (reduce range) and u8u8 weights are qbench's grid: ORT's own min/max would pick other codes
    inject_weights = (q.method == "qat" or w.observer != "minmax" or w.bits != 8 or ctx.int8_path == "u8u8")
    inject_acts = q.method == "qat" or a.observer not in _CALIBRATORS
    if (inject_weights or inject_acts) and sim is not None:
        overrides = _qbench_overrides(sim, float_path, weights=inject_weights, activations=inject_acts,
                                      activation_type=QuantType.QInt8 if a.symmetric else QuantType.QUInt8,
                                      u8_weights=ctx.int8_path == "u8u8")
    tags["ort.weight_qparams"] = "qbench" if inject_weights else "ort-minmax"
    calibrator = "MinMax" if inject_acts else _CALIBRATORS[a.observer]
    tags["ort.activation_qparams"] = (("qat-learned" if q.method == "qat" else f"qbench-{a.observer}") if inject_acts
                                      else f"ort-{calibrator}")
    extra: dict[str, Any] = {"ActivationSymmetric": a.symmetric, "WeightSymmetric": w.symmetric}
    if calibrator == "Percentile":
        extra["CalibPercentile"] = a.percentile
    if overrides:
        extra["TensorQuantOverrides"] = overrides
    pre = _pre_process(ctx, float_path)
    out = ctx.workdir / "model_int8.onnx"
    quantize_static(
        str(pre), str(out), _CalibrationReader(_calibration_feeds(ctx, pre)),
        quant_format=QuantFormat.QDQ,
        per_channel=w.granularity == "per_channel",
        weight_type=QuantType.QUInt8 if u8_weights else QuantType.QInt8,
        activation_type=QuantType.QInt8 if a.symmetric else QuantType.QUInt8,
        calibrate_method=getattr(CalibrationMethod, calibrator), extra_options=extra,
    )
    tags["ort.quantization"] = "static-qdq"
    return out


def _qbench_overrides(sim: nn.Module, float_path: Path, *, weights: bool, activations: bool, activation_type: Any,
                      u8_weights: bool = False) -> dict[str, list[dict[str, Any]]]:
    """TensorQuantOverrides carrying qbench's scales: weights by initializer name, activations by the
    input tensor name of each layer's Conv/Gemm node (mapped through the layer's weight name).

    ``u8_weights`` (the u8u8 path) stores symmetric weights as u8 codes with zero point 128: the same grid."""
    import onnx

    from qbench.quant.simulate import quantized_layers

    graph = onnx.load(str(float_path), load_external_data=False).graph
    input_of_weight = {node.input[1]: node.input[0] for node in graph.node if len(node.input) > 1}
    overrides: dict[str, list[dict[str, Any]]] = {}
    for layer in quantized_layers(sim):
        weight_name = f"{layer.name}.weight"
        q = layer.weight_q
        if weights and q is not None:
            zp_type = np.int8 if q.symmetric and not u8_weights else np.uint8
            shift = 128 if q.symmetric and u8_weights else 0
            # ORT's override validator accepts numpy arrays (0-d here), not numpy scalars
            if q.granularity == "per_channel":
                overrides[weight_name] = [
                    {"axis": 0, "scale": np.array(s, np.float32), "zero_point": np.array(z + shift, zp_type)}
                    for s, z in zip(q.scale.tolist(), q.zero_point.tolist(), strict=True)
                ]
            else:
                overrides[weight_name] = [{"scale": np.array(float(q.scale[0]), np.float32),
                                           "zero_point": np.array(int(q.zero_point[0]) + shift, zp_type)}]
        iq = layer.input_quantizer
        tensor = input_of_weight.get(weight_name)
        if activations and iq is not None and iq.calibrated and tensor is not None and tensor not in overrides:
            zp_type = np.int8 if iq.spec.symmetric else np.uint8
            overrides[tensor] = [{"scale": np.array(float(iq.scale.reshape(-1)[0]), np.float32),
                                  "zero_point": np.array(int(iq.zero_point.reshape(-1)[0]), zp_type),
                                  "quant_type": activation_type}]
    return overrides


def _quantize_dynamic(ctx: DeployContext, float_path: Path, tags: dict[str, str]) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    w = ctx.cfg.quant.weights
    out = ctx.workdir / "model_dynamic.onnx"
    # reduce range: ORT's own 7-bit weights ([-64, 64]; the simulation's 7-bit grid is [-63, 63])
    u8_weights = ctx.int8_path == "u8u8" or not w.symmetric
    quantize_dynamic(str(_pre_process(ctx, float_path)), str(out), per_channel=w.granularity == "per_channel",
                     reduce_range=w.bits < 8, weight_type=QuantType.QUInt8 if u8_weights else QuantType.QInt8)
    tags["ort.quantization"] = "dynamic"
    return out


def gemm_to_matmul(model: Any) -> int:
    """Rewrite Gemm(transB=1) as MatMul + Add in place (ORT's MatMulNBits quantizer only takes MatMul)."""
    from onnx import helper, numpy_helper

    initializers = {i.name: i for i in model.graph.initializer}
    nodes, rewritten = [], 0
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
        if node.op_type != "Gemm" or node.input[1] not in initializers or not plain:
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(initializers[node.input[1]])
        if attrs.get("transB", 0):
            weight = weight.T
        # keep the layer's weight name as a prefix so the op mix can still map the node to its layer
        transposed = numpy_helper.from_array(np.ascontiguousarray(weight), node.input[1] + "_kn")
        model.graph.initializer.append(transposed)
        product = node.output[0] + "_matmul"
        nodes.append(helper.make_node("MatMul", [node.input[0], transposed.name], [product],
                                      name=node.name + "_matmul"))
        if len(node.input) > 2 and node.input[2]:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=node.name + "_bias"))
        else:
            nodes.append(helper.make_node("Identity", [product], [node.output[0]], name=node.name + "_out"))
        rewritten += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return rewritten


def _quantize_weight_only(ctx: DeployContext, float_path: Path, tags: dict[str, str]) -> Path:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    w = ctx.cfg.quant.weights
    model = onnx.load(str(float_path))
    tags["ort.gemm_rewritten"] = str(gemm_to_matmul(model))
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    per_channel = w.granularity == "per_channel"
    quantizer = MatMulNBitsQuantizer(model, bits=w.bits, block_size=128 if per_channel else w.group_size,
                                     is_symmetric=w.symmetric, channel_wised_quantize=per_channel)
    quantizer.process()
    out = ctx.workdir / "model_int4.onnx"
    quantizer.model.save_model_to_file(str(out))
    tags["ort.quantization"] = "weight-only-matmulnbits"
    return out
