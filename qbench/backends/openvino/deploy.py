"""Deployment of ``openvino``: the float ONNX model (qbench's export or the user's file) or its int8 form (qbench's
QDQ model, or NNCF's) compiled for the CPU; the compiled model's runtime graph says what precision each layer ran
in, which gives the op mix and the kernel label."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from qbench.backends.deployment import DeployContext, Deployment
from qbench.backends.onnxruntime.deploy import float_onnx
from qbench.backends.onnxruntime.quantize import feed_names
from qbench.data.batching import Outputs, output_names

if TYPE_CHECKING:
    import openvino as ov

    from qbench.config import QBenchConfig

# compiled-model properties recorded as openvino.<lower-case name> tags
_PROPERTIES = ("INFERENCE_NUM_THREADS", "PERFORMANCE_HINT", "INFERENCE_PRECISION_HINT", "NUM_STREAMS",
               "EXECUTION_MODE_HINT")
_NOT_LAYERS = ("Const", "Input", "Output")


def deploy(ctx: DeployContext) -> Deployment:
    import openvino as ov

    from qbench.measure.opmix import runtime_op_mix

    cfg = ctx.cfg
    method = cfg.quant.method
    core = ov.Core()
    tags: dict[str, str] = {"openvino.version": ov.get_version(), "openvino.device": core.get_property(
        "CPU", "FULL_DEVICE_NAME")}
    t0 = time.perf_counter()
    float_path = float_onnx(ctx)
    metrics = {"time.export_s": time.perf_counter() - t0}

    t0 = time.perf_counter()
    if method == "none":
        model = core.read_model(str(float_path))
        tags["openvino.quantization"] = "none"
    elif method in ("ptq", "qat") and cfg.backend.int8_source == "qdq":
        import onnxruntime as ort

        from qbench.backends.onnxruntime.quantize import quantize_static

        model = core.read_model(str(quantize_static(ctx, float_path, tags)))
        tags["openvino.quantization"] = f"static-qdq (onnxruntime {ort.__version__} quantize_static)"
    else:
        from qbench.backends.openvino import nncf_quant

        model = core.read_model(str(float_path))
        if method == "weight_only":
            model = nncf_quant.compress_weights(ctx, model, tags)
        else:
            model = nncf_quant.quantize(ctx, model, tags)
    metrics["time.ov_quantize_s"] = time.perf_counter() - t0
    artifact = ctx.workdir / "model.xml"
    ov.save_model(model, str(artifact), compress_to_fp16=False)  # what OpenVINO deploys: IR, weights as made

    feeds = feed_names(ctx, [i.any_name for i in model.inputs])
    # weight-only keeps the dynamic batch: compiled for a static shape, the CPU plugin folds the compressed weights
    # back to f32 (runtimePrecision f32), while the dynamic model runs them compressed (i8/i4)
    static = StaticShapes(core, model, _compile_config(cfg), feeds, static=method != "weight_only")
    t0 = time.perf_counter()  # the op mix: from the model compiled for one sample (the model's batch)
    batch = ctx.splits.fixed_batch or 1
    compiled = static.compiled({n: (batch, *t.shape[1:]) for n, t in zip(feeds, ctx.splits.evaluation.tensors[:-1],
                                                                             strict=False)})
    metrics["time.ov_compile_s"] = time.perf_counter() - t0
    for name in _PROPERTIES:
        value = compiled.get_property(name)  # an ov.Type for the precision: its short name (f32, bf16)
        tags[f"openvino.{name.lower()}"] = value.get_type_name() if hasattr(value, "get_type_name") else str(value)
    tags["openvino.shapes"] = ("static: compiled once per input shape (batch size)" if static.static
                               else "dynamic batch (weight-only)")
    layers = runtime_layers(compiled)
    tags["openvino.runtime_precisions"] = ",".join(  # every layer of the runtime graph but constants and I/O
        f"{t}:{p}={n}" for (t, p), n in sorted(Counter((t, p) for t, p, _ in layers if t not in _NOT_LAYERS).items()))
    # the oneDNN kernel each compute layer runs (e.g. brgconv_avx512_amx_I8): which ISA the figures come from
    tags["openvino.primitives"] = ",".join(f"{k}={n}" for k, n in sorted(primitive_types(compiled).items()))
    mix_metrics, mix_tags = runtime_op_mix(layers, ctx.layer_counts())
    metrics.update(mix_metrics)
    tags.update(mix_tags)
    kernel = _kernel(cfg, layers, mix_metrics)

    declared = [o.any_name for o in model.outputs]
    # qbench's export of a torch module answers with the torch backends' output names; a user's file keeps its own
    names = declared if ctx.onnx_path is not None else list(output_names(len(declared)))

    def prepare(inputs: Mapping[str, torch.Tensor]) -> tuple[Any, dict[str, np.ndarray]]:
        feed = {name: np.ascontiguousarray(t.numpy()) for name, t in zip(feeds, inputs.values(), strict=True)}
        return static.request({name: a.shape for name, a in feed.items()}), feed

    def run(prepared: tuple[Any, dict[str, np.ndarray]]) -> Any:
        request, feed = prepared
        # outputs stay in the request's buffers (no copy in the timed call); ``outputs`` copies them out
        return request.infer(feed, share_inputs=True, share_outputs=True)

    def outputs(result: Any) -> Outputs:
        return {name: torch.from_numpy(np.array(value)) for name, value in zip(names, result.to_tuple(), strict=True)}

    return Deployment(kernel=kernel, prepare=prepare, run=run, outputs=outputs,
                      artifacts=[artifact, artifact.with_suffix(".bin")], tags=tags, metrics=metrics,
                      runtime=compiled)


class StaticShapes:
    """The model compiled once per input shape, on first use (``prepare``, outside any timed call); once, with its
    dynamic batch, when not ``static``.

    Static shapes are how OpenVINO models are usually deployed, and the CPU plugin crashed (SIGSEGV, openvino
    2026.4.1) running NNCF's int8 mobilenet_v2 with a dynamic batch at batch 1; a static compile of the same model
    runs."""

    def __init__(self, core: ov.Core, model: ov.Model, config: dict[str, Any], feeds: list[str],
                 static: bool = True) -> None:
        self.core, self.model, self.config, self.feeds, self.static = core, model, config, feeds, static
        self._compiled: dict[tuple[tuple[int, ...], ...], ov.CompiledModel] = {}
        self._requests: dict[tuple[tuple[int, ...], ...], ov.InferRequest] = {}

    def _key(self, shapes: Mapping[str, tuple[int, ...]]) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(shapes[name]) for name in self.feeds) if self.static else ()

    def compiled(self, shapes: Mapping[str, tuple[int, ...]]) -> ov.CompiledModel:
        key = self._key(shapes)
        if key not in self._compiled:
            model = self.model
            if self.static:
                model = self.model.clone()
                model.reshape({model.input(name): list(shape) for name, shape in zip(self.feeds, key, strict=True)})
            self._compiled[key] = self.core.compile_model(model, "CPU", self.config)
        return self._compiled[key]

    def request(self, shapes: Mapping[str, tuple[int, ...]]) -> ov.InferRequest:
        key = self._key(shapes)
        if key not in self._requests:
            self._requests[key] = self.compiled(shapes).create_infer_request()
        return self._requests[key]


def _compile_config(cfg: QBenchConfig) -> dict[str, Any]:
    from qbench.config.threads import resolve_threads

    intra, _ = resolve_threads(cfg)
    return {"INFERENCE_NUM_THREADS": intra, "PERFORMANCE_HINT": cfg.backend.performance_hint,
            "INFERENCE_PRECISION_HINT": cfg.backend.inference_precision}


def runtime_layers(compiled: ov.CompiledModel) -> list[tuple[str, str, int | None]]:
    """(layerType, runtimePrecision, MACs per sample or None) of every layer of the compiled model's runtime
    graph; MACs from the layer's weight shape and output shape (batch dimension excluded)."""
    from qbench.measure.opmix import OV_COMPUTE_LAYERS

    out = []
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        layer_type = info["layerType"].astype(str)
        precision = info["runtimePrecision"].astype(str).lower()
        out.append((layer_type, precision, _macs(op, layer_type) if layer_type in OV_COMPUTE_LAYERS else None))
    return out


def primitive_types(compiled: ov.CompiledModel) -> Counter[str]:
    """How many compute layers (convolutions, fully connected, matmuls) of the runtime graph run each CPU-plugin
    primitive (``primitiveType``: the kernel and its ISA, e.g. ``brgconv_avx2_I8``)."""
    from qbench.measure.opmix import OV_COMPUTE_LAYERS

    return Counter(op.get_rt_info()["primitiveType"].astype(str) for op in compiled.get_runtime_model().get_ops()
                   if op.get_rt_info()["layerType"].astype(str) in OV_COMPUTE_LAYERS)


def _macs(op: Any, layer_type: str) -> int | None:
    """Weight elements x output positions: a convolution's spatial output, a FullyConnected's rows per sample."""
    if op.get_input_size() < 2 or layer_type == "MatMul":  # MatMul: two activations, no weight to read
        return None
    weight, output = op.input(1).get_partial_shape(), op.get_output_partial_shape(0)
    if weight.is_dynamic or output.rank.is_dynamic:
        return None
    positions = list(output)[2:] if "Convolution" in layer_type else list(output)[1:-1]
    if any(d.is_dynamic for d in positions):
        return None
    return math.prod(d.get_length() for d in weight) * math.prod(d.get_length() for d in positions)


def _kernel(cfg: QBenchConfig, layers: list[tuple[str, str, int | None]], mix: dict[str, float]) -> str:
    from qbench.measure.kernel_rule import integer_kernel

    if cfg.quant.method == "none":  # bf16/f16 inference precision: float layers did not run in fp32
        compute = {p for t, p, m in layers if m is not None}
        return "fp32" if compute <= {"f32"} else "mixed"
    bits = cfg.quant.weights.bits
    return integer_kernel(mix, "int4" if cfg.quant.method == "weight_only" and bits == 4 else "int8")
