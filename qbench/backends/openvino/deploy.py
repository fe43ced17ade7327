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

    t0 = time.perf_counter()
    compiled = core.compile_model(model, "CPU", _compile_config(cfg))
    metrics["time.ov_compile_s"] = time.perf_counter() - t0
    for name in _PROPERTIES:
        value = compiled.get_property(name)  # an ov.Type for the precision: its short name (f32, bf16)
        tags[f"openvino.{name.lower()}"] = value.get_type_name() if hasattr(value, "get_type_name") else str(value)
    layers = runtime_layers(compiled)
    tags["openvino.runtime_precisions"] = ",".join(  # every layer of the runtime graph but constants and I/O
        f"{t}:{p}={n}" for (t, p), n in sorted(Counter((t, p) for t, p, _ in layers if t not in _NOT_LAYERS).items()))
    mix_metrics, mix_tags = runtime_op_mix(layers, ctx.layer_counts())
    metrics.update(mix_metrics)
    tags.update(mix_tags)
    kernel = _kernel(cfg, layers, mix_metrics)

    request = compiled.create_infer_request()
    feeds = feed_names(ctx, [i.any_name for i in compiled.inputs])
    declared = [o.any_name for o in compiled.outputs]
    # qbench's export of a torch module answers with the torch backends' output names; a user's file keeps its own
    names = declared if ctx.onnx_path is not None else list(output_names(len(declared)))

    def prepare(inputs: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
        return {name: np.ascontiguousarray(t.numpy()) for name, t in zip(feeds, inputs.values(), strict=True)}

    def run(feed: dict[str, np.ndarray]) -> Any:
        # outputs stay in the request's buffers (no copy in the timed call); ``outputs`` copies them out
        return request.infer(feed, share_inputs=True, share_outputs=True)

    def outputs(result: Any) -> Outputs:
        return {name: torch.from_numpy(np.array(value)) for name, value in zip(names, result.to_tuple(), strict=True)}

    return Deployment(kernel=kernel, prepare=prepare, run=run, outputs=outputs,
                      artifacts=[artifact, artifact.with_suffix(".bin")], tags=tags, metrics=metrics,
                      runtime=compiled)


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
