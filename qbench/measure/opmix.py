"""Operator mix of a deployed graph: how much of the compute actually runs in integer kernels.

An "int8" model whose convolutions still run in float (unsupported pattern, a missing fusion, dynamic
quantization that only covers MatMul) is not faster; this is how qbench says so. Shares are reported by
operator count and, where a node can be mapped to a layer (by its weight/bias initializer names, which
qbench's exports keep), by multiply-accumulates.

The rule that names a deployed model's kernel from its op mix (:func:`integer_kernel`) is read by the
backends, and its cut (:data:`MIN_INTEGER_SHARE`) by the deployment-gap verdict: importable without torch.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from qbench.measure.kernel_rule import MIN_INTEGER_SHARE, integer_share

if TYPE_CHECKING:
    from torch import nn

    from qbench.measure.opcount import LayerCount

# a model runs "in integer kernels" (kernel int8/int4, verdict "integer") from this share of its MACs (of its
# compute ops when no MACs could be mapped) on; below it, it is "mixed"

# ONNX Runtime compute operators, by the precision of their arithmetic
ORT_INTEGER_OPS = {
    "QLinearConv", "ConvInteger", "QLinearMatMul", "MatMulInteger", "QGemm", "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat", "MatMulNBits", "QAttention", "DynamicQuantizeLSTM", "QLinearConvTranspose",
}
ORT_FLOAT_OPS = {"Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul", "ConvTranspose", "Attention"}
ORT_CONV_OPS = {"QLinearConv", "ConvInteger", "Conv", "FusedConv"}
ORT_QDQ_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
# OpenVINO CPU plugin: compute layers of the runtime graph (``layerType``) and the ``runtimePrecision`` values of
# integer kernels (int8 x int8, or integer weights decompressed inside the kernel)
OV_COMPUTE_LAYERS = {"Convolution", "Deconvolution", "FullyConnected", "MatMul"}
OV_INTEGER_PRECISIONS = {"u8", "i8", "u4", "i4"}
_SUFFIXES = (".weight", ".bias")


def _layer_of(tensor: str, layers: dict[str, LayerCount]) -> str | None:
    for suffix in _SUFFIXES:
        if suffix in tensor:
            name = tensor.split(suffix)[0]
            if name in layers:
                return name
    return None


def _metrics(kinds: list[tuple[str, bool, bool, int | None]], total_macs: int) -> dict[str, float]:
    """kinds: (op_type, is_integer, is_conv, macs or None) per compute op."""
    compute = len(kinds)
    integer = sum(1 for _, is_int, _, _ in kinds if is_int)
    convs = [k for k in kinds if k[2]]
    mapped = sum(m for *_, m in kinds if m is not None)
    integer_macs = sum(m for _, is_int, _, m in kinds if is_int and m is not None)
    out = {
        "opmix.compute_ops": float(compute),
        "opmix.integer_ops": float(integer),
        "opmix.integer_op_share": integer / compute if compute else 0.0,
        "opmix.conv_ops": float(len(convs)),
        "opmix.integer_conv_share": sum(1 for k in convs if k[1]) / len(convs) if convs else 0.0,
    }
    if total_macs and mapped:
        out["opmix.mac_coverage"] = mapped / total_macs
        out["opmix.integer_mac_share"] = integer_macs / mapped
    return out


def verdict(metrics: dict[str, float]) -> str:
    """One line for humans: how much of the work is integer."""
    share, basis = integer_share(metrics)
    share = share or 0.0
    if share >= MIN_INTEGER_SHARE:
        return f"integer: {share:.0%} of {basis} in integer kernels"
    if share > 0:
        return f"partly integer: {share:.0%} of {basis} in integer kernels, the rest in float"
    return "float: no integer kernels in the deployed graph"


def onnx_op_mix(model_path: Path, layers: dict[str, LayerCount]) -> tuple[dict[str, float], dict[str, str]]:
    """Op mix of an (optimized) ONNX graph; compute nodes are mapped to layers by initializer names."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    kinds = []
    counter: Counter[str] = Counter()
    qdq = 0
    for node in model.graph.node:
        op = node.op_type
        if op in ORT_QDQ_OPS:
            qdq += 1
        if op not in ORT_INTEGER_OPS and op not in ORT_FLOAT_OPS:
            continue
        counter[op] += 1
        layer = next((name for t in node.input if t in initializers and (name := _layer_of(t, layers))), None)
        macs = layers[layer].macs if layer else None
        kinds.append((op, op in ORT_INTEGER_OPS, op in ORT_CONV_OPS, macs))
    metrics = _metrics(kinds, sum(c.macs for c in layers.values()))
    metrics["opmix.qdq_ops"] = float(qdq)
    tags = {"opmix.ops": ",".join(f"{op}={n}" for op, n in sorted(counter.items())), "opmix.verdict": verdict(metrics)}
    return metrics, tags


def runtime_op_mix(ops: list[tuple[str, str, int | None]], layers: dict[str, LayerCount]
                   ) -> tuple[dict[str, float], dict[str, str]]:
    """Op mix of a runtime graph given as (layer type, runtime precision, MACs per sample or None) per compute
    layer (OpenVINO's compiled model, :mod:`qbench.backends.openvino.deploy`); ``opmix.mac_coverage`` then
    compares the runtime's MACs with qbench's count of the torch model."""
    kinds = []
    counter: Counter[str] = Counter()
    for layer_type, precision, macs in ops:
        if layer_type not in OV_COMPUTE_LAYERS:
            continue
        counter[f"{layer_type}:{precision}"] += 1
        kinds.append((layer_type, precision in OV_INTEGER_PRECISIONS, "Convolution" in layer_type, macs))
    metrics = _metrics(kinds, sum(c.macs for c in layers.values()) or sum(k[3] or 0 for k in kinds))
    tags = {"opmix.ops": ",".join(f"{op}={n}" for op, n in sorted(counter.items())), "opmix.verdict": verdict(metrics)}
    return metrics, tags


def torch_op_mix(model: nn.Module, layers: dict[str, LayerCount]) -> tuple[dict[str, float], dict[str, str]]:
    """Op mix of a torch module tree: quantized (torch.ao.nn.quantized*) vs float Conv/Linear modules; a module
    whose class has an ``opmix_label`` (qbench's int4 weight-only Linear) is an integer-weight Linear by that name,
    as ORT's MatMulNBits is in :func:`onnx_op_mix`."""
    from torch import nn

    kinds = []
    counter: Counter[str] = Counter()
    for name, module in model.named_modules():
        own_label = getattr(type(module), "opmix_label", None)
        if isinstance(own_label, str):
            counter[own_label] += 1
            kinds.append((own_label, True, False, layers[name].macs if name in layers else None))
            continue
        module_path = type(module).__module__
        quantized = ".quantized" in module_path
        is_conv = "Conv" in type(module).__name__
        is_linear = type(module).__name__ in ("Linear", "LinearReLU")
        if not (is_conv or is_linear) or (not quantized and not isinstance(module, (nn.Conv2d, nn.Linear))):
            continue
        label = ("quantized." if quantized else "float.") + type(module).__name__
        if ".dynamic" in module_path:
            label = "dynamic." + type(module).__name__
        counter[label] += 1
        macs = layers[name].macs if name in layers else None
        kinds.append((label, quantized, is_conv, macs))
    metrics = _metrics(kinds, sum(c.macs for c in layers.values()))
    tags = {"opmix.ops": ",".join(f"{op}={n}" for op, n in sorted(counter.items())), "opmix.verdict": verdict(metrics)}
    return metrics, tags


def delegated_op_mix(ops: list[tuple[str, bool, bool, bool, int | None]], layers: dict[str, LayerCount]
                     ) -> tuple[dict[str, float], dict[str, str]]:
    """Op mix of a lowered ExecuTorch program (:mod:`qbench.backends.executorch.deploy`), given as (op name,
    delegated, int8, is_conv, MACs per sample or None) per compute op. A compute op counts as integer only when it
    is delegated *and* int8 (a quantized op left to the portable kernels runs in float after dequantizing), so the
    shared kernel rule reads "int8" only when >= 90 % of MACs run in a delegated int8 op; the delegated share itself
    (float or int8) is ``opmix.delegated_op_share`` / ``opmix.delegated_mac_share``."""
    kinds = [(op, delegated and integer, is_conv, macs) for op, delegated, integer, is_conv, macs in ops]
    metrics = _metrics(kinds, sum(c.macs for c in layers.values()) or sum(k[3] or 0 for k in kinds))
    delegated = [(macs, is_delegated) for _, is_delegated, _, _, macs in ops]
    metrics["opmix.delegated_ops"] = float(sum(1 for _, d in delegated if d))
    metrics["opmix.delegated_op_share"] = metrics["opmix.delegated_ops"] / len(ops) if ops else 0.0
    mapped = sum(m for m, _ in delegated if m is not None)
    if mapped:
        metrics["opmix.delegated_mac_share"] = sum(m for m, d in delegated if d and m is not None) / mapped
    counter = Counter(f"{'xnnpack' if d else 'portable'}:{'int8' if i else 'fp32'}.{op}" for op, d, i, _, _ in ops)
    tags = {"opmix.ops": ",".join(f"{op}={n}" for op, n in sorted(counter.items())), "opmix.verdict": verdict(metrics)}
    return metrics, tags
