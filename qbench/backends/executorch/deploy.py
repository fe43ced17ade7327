"""Deployment of ``executorch``: ``torch.export`` (after PT2E for int8) -> ``to_edge_transform_and_lower`` with the
XNNPACK partitioner -> ``.pte``, loaded back from that file and run by ExecuTorch's Python runtime. The lowered
graph says which compute ops went to the XNNPACK delegate and which of those are int8: the op mix and the kernel
label (see the package docstring)."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from qbench.backends.deployment import DeployContext, Deployment
from qbench.backends.executorch.cache import LoweredProgram, lowered, program_key
from qbench.data.batching import Outputs, module_outputs, tensors_of

if TYPE_CHECKING:
    from torch import nn

    from qbench.config import QBenchConfig

# compute ops of the edge graph (name of the aten overload) -> is a convolution
_COMPUTE_OPS = {"aten.convolution.default": True, "aten.linear.default": False, "aten.addmm.default": False,
                "aten.mm.default": False, "aten.bmm.default": False}
_DEQUANTIZE = ("quantized_decomposed.dequantize_per_tensor", "quantized_decomposed.dequantize_per_channel")
# the XNNPACK quantizer's eps of its observers (get_symmetric_quantization_config)
_EPS = 2**-12


def deploy(ctx: DeployContext) -> Deployment:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime
    from executorch.version import __version__ as et_version

    from qbench.config.threads import resolve_threads
    from qbench.measure.kernel_rule import integer_kernel
    from qbench.measure.opmix import delegated_op_mix

    cfg = ctx.cfg
    method = cfg.quant.method
    intra, _ = resolve_threads(cfg)
    # the XNNPACK delegate runs on ExecuTorch's global threadpool (its default: one thread per core)
    portable_lib._unsafe_reset_threadpool(intra)
    tags: dict[str, str] = {"executorch.version": et_version}
    example, dynamic, capacity = _example(ctx)
    tags["executorch.shapes"] = (f"dynamic batch 1..{capacity} (memory planned for {capacity})" if dynamic
                                 else f"static batch {capacity}")
    network, settings, calibration = _lowering_inputs(ctx)
    key = program_key(network, example, dynamic, settings, [t for batch in calibration for t in batch])
    times: dict[str, float] = {}

    def lower() -> LoweredProgram:
        built: dict[str, str] = {}
        t0 = time.perf_counter()
        model = network if method == "none" else _pt2e(ctx, network, example, dynamic, calibration,
                                                        settings["calibration_samples"], built)
        times["time.et_quantize_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        exported = torch.export.export(model, example, dynamic_shapes=dynamic)
        edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
        program = edge.to_executorch()
        times["time.et_lower_s"] = time.perf_counter() - t0
        ops, subgraphs = lowered_ops(edge.exported_program().graph_module)
        return LoweredProgram(program.buffer, ops, subgraphs, built)

    t0 = time.perf_counter()
    program, from_cache = lowered(key, lower)
    metrics = {"time.et_program_s": time.perf_counter() - t0, **times}  # load from the cache, or quantize + lower
    tags["executorch.quantization"] = "none"
    tags.update(program.tags)
    tags["executorch.lowering"] = f"{'cached' if from_cache else 'lowered in this cell'} (program {key})"
    artifact = ctx.workdir / ("model_fp32.pte" if method == "none" else "model_int8.pte")
    artifact.write_bytes(program.buffer)

    mix_metrics, mix_tags = delegated_op_mix(program.ops, ctx.layer_counts())
    metrics.update(mix_metrics)
    tags.update(mix_tags)
    metrics["opmix.delegated_subgraphs"] = float(program.subgraphs)
    kernel = "fp32" if method == "none" else integer_kernel(mix_metrics, "int8")

    # what runs is the .pte file as written (a phone would load the same bytes)
    forward = Runtime.get().load_program(artifact).load_method("forward")
    tags["executorch.threads"] = str(portable_lib._threadpool_get_thread_count())
    tags["executorch.runtime"] = "executorch.runtime (Python bindings, portable_lib) with XNNPACK on this x86 CPU"

    def prepare(inputs: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        return [t.contiguous() for t in inputs.values()]

    def run(args: list[torch.Tensor]) -> list[torch.Tensor]:
        n = args[0].shape[0]
        if n <= capacity:
            return list(forward.execute(args))
        # more samples than the program was memory-planned for (e.g. a large LoadGen query): in chunks
        parts = [forward.execute([t[i:i + capacity] for t in args]) for i in range(0, n, capacity)]
        return [torch.cat(list(outs)) for outs in zip(*parts, strict=True)]

    def outputs(result: list[torch.Tensor]) -> Outputs:
        return module_outputs(result[0] if len(result) == 1 else tuple(result))

    return Deployment(kernel=kernel, prepare=prepare, run=run, outputs=outputs, artifacts=[artifact], tags=tags,
                      metrics=metrics, runtime=forward)


def _largest_batch(cfg: QBenchConfig) -> int:
    """The most samples one call gets: evaluation, latency and throughput batches, LoadGen's multi-stream query."""
    m = cfg.measure
    return max(m.eval_batch_size, m.latency.batch_size, m.latency.throughput_batch_size, m.multi_stream_samples, 1)


def _example(ctx: DeployContext) -> tuple[tuple[torch.Tensor, ...], Any, int]:
    """Export inputs, dynamic shapes and the batch the program is memory-planned for.

    ExecuTorch plans memory for the example's shapes: a program exported with an example of batch 2 refuses larger
    batches at run time ("Attempted to resize a bounded tensor"), and an example of batch 1 makes torch.export
    specialize the batch to 1. So the example is the largest batch a call gets (evaluation rows, repeated if the
    split is smaller), with a dynamic batch dimension from 1 to that; a model with a fixed batch gets that one."""
    tensors = ctx.splits.evaluation.tensors[:-1]
    fixed = ctx.splits.fixed_batch
    capacity = fixed or _largest_batch(ctx.cfg)
    rows = torch.arange(capacity) % len(tensors[0])
    example = tuple(t[rows].contiguous() for t in tensors)
    if fixed or capacity < 2:
        return example, None, capacity
    batch = torch.export.Dim("batch", min=1, max=capacity)
    return example, tuple({0: batch} for _ in tensors), capacity


def _quantization_config(cfg: QBenchConfig, tags: dict[str, str]) -> Any:
    """The XNNPACK quantizer's symmetric config (per-channel or per-tensor weights), its activation observer
    replaced by qbench's (``backend.observers=qbench``) where they differ."""
    from dataclasses import replace

    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config
    from torchao.quantization.pt2e import HistogramObserver, MinMaxObserver
    from torchao.quantization.pt2e.quantizer import QuantizationConfig

    q = cfg.quant
    config = get_symmetric_quantization_config(is_per_channel=q.weights.granularity == "per_channel")
    observer = "HistogramObserver"
    if cfg.backend.observers == "qbench":
        ctor, observer = {"minmax": (MinMaxObserver, "MinMaxObserver"),
                          "histogram": (HistogramObserver, "HistogramObserver")}[q.activations.observer]
        act = replace(config.input_activation, observer_or_fake_quant_ctr=ctor.with_args(eps=_EPS))
        config = QuantizationConfig(act, act, config.weight, config.bias, config.is_qat)
    weight_observer = "PerChannelMinMaxObserver" if q.weights.granularity == "per_channel" else "MinMaxObserver"
    tags.update({"executorch.observers": cfg.backend.observers,
                 "executorch.activation_observer": f"{observer} (int8 asymmetric per tensor, [-128, 127])",
                 "executorch.weight_observer": f"{weight_observer} (int8 symmetric, [-127, 127])"})
    return config


def _lowering_inputs(ctx: DeployContext) -> tuple[nn.Module, dict[str, Any], list[tuple[torch.Tensor, ...]]]:
    """What a cell's program is lowered from: the network (the FP32 model, or for int8 the simulated model's float
    network, BN folded: the one the simulation quantized), the quantizer settings and the calibration batches."""
    from qbench.quant.simulate import unwrap_simulated

    cfg = ctx.cfg
    if cfg.quant.method == "none":
        return ctx.fp32_model, {"quantization": "none"}, []
    import torchao

    assert ctx.simulated_model is not None, "a quantized cell needs its simulated model"
    q = cfg.quant
    samples = min(q.calibration.samples, len(ctx.splits.calibration))
    batches = [tensors_of(b) for b in ctx.splits.calibration_inputs(samples, q.calibration.batch_size)]
    settings = {"quantization": "pt2e-xnnpack", "torchao": torchao.__version__, "observers": cfg.backend.observers,
                "activation_observer": q.activations.observer, "granularity": q.weights.granularity,
                "calibration_samples": samples}
    return unwrap_simulated(ctx.simulated_model), settings, batches


def _pt2e(ctx: DeployContext, network: nn.Module, example: tuple[torch.Tensor, ...], dynamic: Any,
          calibration: list[tuple[torch.Tensor, ...]], samples: int, tags: dict[str, str]) -> nn.Module:
    """Static W8A8 by PT2E with the XNNPACK quantizer, calibrated on qbench's calibration batches."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    captured = torch.export.export(network, example, dynamic_shapes=dynamic).module()
    quantizer = XNNPACKQuantizer().set_global(_quantization_config(ctx.cfg, tags))
    prepared = prepare_pt2e(captured, quantizer)
    with torch.no_grad():
        for batch in calibration:
            prepared(*batch)
    import torchao

    tags.update({
        "executorch.quantization": f"pt2e XNNPACKQuantizer (torchao {torchao.__version__} prepare_pt2e/convert_pt2e)",
        "executorch.calibration_samples": str(samples),
        "executorch.grid": "PT2E's own observers and quantize/dequantize placement (int8 between ops), not qbench's "
                           "scales: the deployment gap includes a different calibration",
    })
    return convert_pt2e(prepared)


def _op_name(target: Any) -> str:
    """``aten.convolution.default`` for an edge or aten overload (their ``__name__``), else str()."""
    return str(getattr(target, "__name__", target))


def _macs(node: Any, is_conv: bool) -> int | None:
    """Weight elements x output positions per sample (a convolution's spatial output, a linear's rows); None for
    a matmul of two activations or a shape not known statically."""
    name = _op_name(node.target)
    weight = node.args[2] if name == "aten.addmm.default" else node.args[1] if len(node.args) > 1 else None
    if name in ("aten.mm.default", "aten.bmm.default") or not hasattr(weight, "meta") or "val" not in node.meta:
        return None
    out = node.meta["val"].shape
    positions = list(out[2:]) if is_conv else list(out[1:-1])
    dims = [*weight.meta["val"].shape, *positions]
    if not all(isinstance(d, int) for d in dims):
        return None
    return math.prod(dims)


def _is_int8(node: Any) -> bool:
    """A compute op whose input and weight both come from dequantize nodes (the q/dq pattern XNNPACK runs in
    int8)."""
    args = node.args[1:3] if _op_name(node.target) == "aten.addmm.default" else node.args[:2]
    return len(args) == 2 and all(_op_name(getattr(a, "target", "")).startswith(_DEQUANTIZE) for a in args)


def lowered_ops(graph: torch.fx.GraphModule) -> tuple[list[tuple[str, bool, bool, bool, int | None]], int]:
    """(op name, delegated, int8, is_conv, MACs per sample) of every compute op of a lowered program — inside the
    XNNPACK delegates' subgraphs and left in the top-level graph — and the number of delegated subgraphs."""
    from executorch.exir.lowered_backend_module import get_lowered_submodules

    def compute(g: torch.fx.Graph, delegated: bool) -> list[tuple[str, bool, bool, bool, int | None]]:
        out = []
        for node in g.nodes:
            name = _op_name(node.target) if node.op == "call_function" else ""
            if name in _COMPUTE_OPS:
                is_conv = _COMPUTE_OPS[name]
                out.append((name.split(".")[1], delegated, _is_int8(node), is_conv, _macs(node, is_conv)))
        return out

    submodules = get_lowered_submodules(graph)
    ops = compute(graph.graph, False)
    for _, submodule, _ in submodules:
        ops += compute(submodule.original_module.graph, submodule.backend_id == "XnnpackBackend")
    return ops, len(submodules)
