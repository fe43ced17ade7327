"""ONNX Runtime's own quantizers fed with qbench's calibration split and, where ORT has no equivalent, qbench's
scales: static QDQ, dynamic, 4-bit weight-only (MatMulNBits)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qbench.backends.onnxruntime import CALIBRATORS, CODE_ALGORITHMS

if TYPE_CHECKING:
    from torch import nn

    from qbench.backends.deployment import DeployContext


def feed_names(ctx: DeployContext, declared: list[str]) -> list[str]:
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
    names = feed_names(ctx, [i.name for i in graph.input if i.name not in initializers])
    cal = ctx.cfg.quant.calibration
    samples = min(cal.samples, len(ctx.splits.calibration))
    return [{name: t.numpy() for name, t in zip(names, tensors_of(batch), strict=True)}
            for batch in ctx.splits.calibration_inputs(samples, cal.batch_size)]


def float_nodes(ctx: DeployContext, model_path: Path) -> list[str]:
    """ONNX nodes of the Conv/Linear layers the simulation kept float (``quant.exclude``, ``quant.layers`` float,
    ``model.keep_float``): ORT's quantizers leave them float too (``nodes_to_exclude``). Found by weight name."""
    import onnx
    from torch import nn

    from qbench.quant.simulate import quantized_layers

    if ctx.simulated_model is None or ctx.fp32_model is None:
        return []
    quantized = {layer.name for layer in quantized_layers(ctx.simulated_model)}
    kept = [name for name, m in ctx.fp32_model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and name not in quantized]
    if not kept:
        return []
    graph = onnx.load(str(model_path), load_external_data=False).graph
    node_of_weight = {node.input[1]: node.name for node in graph.node if len(node.input) > 1}
    missing = [name for name in kept if f"{name}.weight" not in node_of_weight]
    if missing:
        raise RuntimeError(f"layers kept float {missing[:3]} have no node with their weight in the ONNX graph")
    return [node_of_weight[f"{name}.weight"] for name in kept]


def _pre_process(ctx: DeployContext, float_path: Path) -> Path:
    if not getattr(ctx.cfg.backend, "pre_process", True):  # a setting of onnxruntime; openvino's QDQ path runs it
        return float_path
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = ctx.workdir / "model_preprocessed.onnx"
    quant_pre_process(str(float_path), str(out), skip_symbolic_shape=False)
    return out


def quantize_static(ctx: DeployContext, float_path: Path, tags: dict[str, str]) -> Path:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    q = ctx.cfg.quant
    w, a = q.weights, q.activations
    overrides: dict[str, list[dict[str, Any]]] = {}
    sim = ctx.simulated_model
    u8_weights = ctx.int8_path == "u8u8" or not w.symmetric
    # 7-bit (reduce range) and u8u8 weights are qbench's grid: ORT's own min/max would pick other codes
    # an algorithm's codes are not ORT's min/max rounding of anything, and its activation ranges are the ones it
    # was optimised with (AdaRound/QDrop calibrate before they reconstruct)
    algorithm = q.algorithm in CODE_ALGORITHMS
    inject_weights = (q.method == "qat" or w.observer != "minmax" or w.bits != 8 or ctx.int8_path == "u8u8"
                      or algorithm)
    inject_acts = q.method == "qat" or a.observer not in CALIBRATORS or algorithm
    if (inject_weights or inject_acts) and sim is not None:
        overrides = _qbench_overrides(sim, float_path, weights=inject_weights, activations=inject_acts,
                                      activation_type=QuantType.QInt8 if a.symmetric else QuantType.QUInt8,
                                      u8_weights=ctx.int8_path == "u8u8")
    tags["ort.weight_qparams"] = "qbench" if inject_weights else "ort-minmax"
    calibrator = "MinMax" if inject_acts else CALIBRATORS[a.observer]
    tags["ort.activation_qparams"] = (("qat-learned" if q.method == "qat" else f"qbench-{a.observer}") if inject_acts
                                      else f"ort-{calibrator}")
    extra: dict[str, Any] = {"ActivationSymmetric": a.symmetric, "WeightSymmetric": w.symmetric}
    if calibrator == "Percentile":
        extra["CalibPercentile"] = a.percentile
    if overrides:
        extra["TensorQuantOverrides"] = overrides
    pre = _pre_process(ctx, float_path)
    out = ctx.workdir / "model_int8.onnx"
    kept = float_nodes(ctx, pre)
    tags["ort.float_nodes"] = str(len(kept))
    quantize_static(
        str(pre), str(out), _CalibrationReader(_calibration_feeds(ctx, pre)), nodes_to_exclude=kept,
        quant_format=QuantFormat.QDQ,
        per_channel=w.granularity == "per_channel",
        weight_type=QuantType.QUInt8 if u8_weights else QuantType.QInt8,
        activation_type=QuantType.QInt8 if a.symmetric else QuantType.QUInt8,
        calibrate_method=getattr(CalibrationMethod, calibrator), extra_options=extra,
    )
    tags["ort.quantization"] = "static-qdq"
    if w.bits < 8:
        tags["ort.weight_codes"] = f"{w.bits}-bit codes stored in int8 (int8 kernels)"
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


def quantize_dynamic(ctx: DeployContext, float_path: Path, tags: dict[str, str]) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    w = ctx.cfg.quant.weights
    out = ctx.workdir / "model_dynamic.onnx"
    # reduce range: ORT's own 7-bit weights ([-64, 64]; the simulation's 7-bit grid is [-63, 63])
    u8_weights = ctx.int8_path == "u8u8" or not w.symmetric
    pre = _pre_process(ctx, float_path)
    kept = float_nodes(ctx, pre)
    tags["ort.float_nodes"] = str(len(kept))
    quantize_dynamic(str(pre), str(out), per_channel=w.granularity == "per_channel", nodes_to_exclude=kept,
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


def quantize_weight_only(ctx: DeployContext, float_path: Path, tags: dict[str, str]) -> Path:
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
