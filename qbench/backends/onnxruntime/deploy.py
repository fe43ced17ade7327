"""Deployment of ``onnxruntime``: the export (or the user's file), ORT's quantization, an inference session."""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from qbench.backends.deployment import DeployContext, Deployment
from qbench.backends.onnxruntime import CODE_ALGORITHMS
from qbench.backends.onnxruntime.export import cached_reference_export, export_onnx
from qbench.backends.onnxruntime.quantize import (
    feed_names,
    quantize_dynamic,
    quantize_static,
    quantize_weight_only,
)
from qbench.data.batching import Outputs, output_names

if TYPE_CHECKING:
    from qbench.config import QBenchConfig

_OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
               "all": "ORT_ENABLE_ALL"}


def deploy(ctx: DeployContext) -> Deployment:
    import onnxruntime as ort

    from qbench.measure.opmix import onnx_op_mix

    cfg = ctx.cfg
    method = cfg.quant.method
    tags: dict[str, str] = {"ort.version": ort.__version__, "ort.opset": str(cfg.backend.onnx_opset)}
    t0 = time.perf_counter()
    float_path = float_onnx(ctx)
    metrics = {"time.export_s": time.perf_counter() - t0}

    t0 = time.perf_counter()
    if method == "none":
        deployed = ctx.workdir / "model_fp32.onnx"
        shutil.copyfile(float_path, deployed)
        tags["ort.quantization"] = "none"
    elif method in ("ptq", "qat"):
        deployed = quantize_static(ctx, float_path, tags)
    elif method == "dynamic":
        deployed = quantize_dynamic(ctx, float_path, tags)
    else:
        deployed = quantize_weight_only(ctx, float_path, tags)
    metrics["time.ort_quantize_s"] = time.perf_counter() - t0

    session, optimized = _session(cfg, deployed, ctx.workdir)
    tags["ort.providers"] = ",".join(session.get_providers())
    tags["ort.graph_optimization_level"] = cfg.backend.graph_optimization_level
    layers = ctx.layer_counts()
    mix_metrics, mix_tags = onnx_op_mix(optimized, layers)
    metrics.update(mix_metrics)
    tags.update(mix_tags)
    kernel = _kernel(method, cfg, mix_metrics)
    feeds = feed_names(ctx, [i.name for i in session.get_inputs()])
    declared = [o.name for o in session.get_outputs()]
    # qbench's export of a torch module answers with the names the torch backends give its outputs (one model,
    # the same outputs on every backend); a user's file keeps its own
    names = declared if ctx.onnx_path is not None else list(output_names(len(declared)))

    def prepare(inputs: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
        return {name: np.ascontiguousarray(t.numpy()) for name, t in zip(feeds, inputs.values(), strict=True)}

    def run(feed: dict[str, np.ndarray]) -> Any:
        return session.run(None, feed)

    def outputs(result: list[Any]) -> Outputs:
        return {name: torch.from_numpy(np.asarray(value)) for name, value in zip(names, result, strict=True)}

    def profile(feed: dict[str, np.ndarray], layer_names: list[str]) -> dict[str, float]:
        from qbench.backends.onnxruntime.profile import layer_times_us

        return layer_times_us(lambda options: _session(cfg, deployed, ctx.workdir, options)[0], feed, optimized,
                              layer_names, ctx.workdir)

    return Deployment(kernel=kernel, prepare=prepare, run=run, outputs=outputs, artifacts=[deployed], tags=tags,
                      metrics=metrics, runtime=session, quantized_weights=ctx.int8_stored_weights(),
                      profile_layers=profile)


def float_onnx(ctx: DeployContext) -> Path:
    """The float ONNX model a cell's deployment starts from: the user's file (weights in initializers), the export
    of the QAT-trained model, of the simulation's dequantized codes (CLE/AdaRound/QDrop), or the cached BN-folded
    export of the FP32 model (``backend.onnx_opset``)."""
    from qbench.quant.simulate import fold_batchnorm, snapped_float_model, unwrap_simulated

    cfg, shape = ctx.cfg, ctx.splits.input_shape
    if ctx.onnx_path is not None:  # a user ONNX model
        return constants_to_initializers(ctx.onnx_path, ctx.workdir / "model_input.onnx")
    if cfg.quant.method == "qat":
        assert ctx.simulated_model is not None
        return export_onnx(unwrap_simulated(ctx.simulated_model), shape, ctx.workdir / "model_qat_float.onnx",
                           cfg.backend.onnx_opset)
    if cfg.quant.algorithm in CODE_ALGORITHMS and cfg.quant.method != "none":
        # the algorithm's codes (and CLE's rescaled weights, corrected biases, per-channel ReLU6 bounds)
        assert ctx.simulated_model is not None
        return export_onnx(snapped_float_model(ctx.simulated_model), shape, ctx.workdir / "model_codes_float.onnx",
                           cfg.backend.onnx_opset)
    return cached_reference_export(cfg.model, cfg.dataset, lambda: fold_batchnorm(ctx.fp32_model), shape,
                                   cfg.backend.onnx_opset)


def _kernel(method: str, cfg: QBenchConfig, mix: dict[str, float]) -> str:
    from qbench.measure.kernel_rule import integer_kernel

    if method == "none":
        return "fp32"
    return integer_kernel(mix, "int4" if method == "weight_only" else "int8")


def _session(cfg: QBenchConfig, model_path: Path, workdir: Path, options: Any = None) -> tuple[Any, Path]:
    """The cell's session of ``model_path`` (``options``: a SessionOptions to start from, e.g. with profiling on)
    and where its optimized graph was written."""
    import onnxruntime as ort

    from qbench.config.threads import resolve_threads

    intra, inter = resolve_threads(cfg)
    options = options or ort.SessionOptions()
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
