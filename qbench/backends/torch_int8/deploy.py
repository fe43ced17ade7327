"""Deployment of ``torch_int8``: PyTorch's quantized CPU kernels (engine ``x86``: fbgemm + oneDNN), reached
through torch.ao FX.

Why torch.ao FX and not pt2e: in torch 2.14 FX graph-mode quantization is deprecated and pt2e lives in
the separate torchao package, but a pt2e-converted model runs *reference* (quantize -> float op ->
dequantize) graphs in eager mode; its integer kernels only appear after ``torch.compile`` with Inductor
(a C++ toolchain, tens of seconds of compilation per model, a different runtime). FX's ``convert_fx``
yields modules that call the fbgemm/oneDNN int8 kernels directly in eager mode, which is what this backend
measures. The choice is recorded in the ``torch.quantization_api`` tag; a pt2e/Inductor backend can be
added as its own module.

The scheme is deployed with *qbench's* quantization parameters, so the deployment gap measures the
kernels, not a different calibration: after ``prepare_fx`` + calibration (min/max, for the tensors qbench
does not quantize, e.g. residual-add outputs), the observer feeding each Conv/Linear gets the range of
the simulated layer's input quantizer, and after ``convert_fx`` each quantized layer's weight is replaced
by the simulated layer's integer codes, scales and bias (``set_weight_bias``). Activations use the full
u8 range; on CPUs without VNNI the cell's int8 path (``backend.int8_path=auto``, qbench/quant/int8_path.py)
deploys 7-bit weight codes so that fbgemm's u8 x s8 pairwise products cannot saturate.

``quant.method=dynamic`` swaps modules eagerly (``quantize_dynamic``: fbgemm's dynamic quantized Linear), so it
also deploys models FX cannot trace (python control flow, like HF transformers); static W8A8 needs FX and says so.
``quant.method=weight_only`` (4-bit, per group) swaps each simulated Linear for :class:`~.int4.Int4WeightOnlyLinear`,
PyTorch's CPU int4 packed-weight matmul running qbench's codes and scales; convolutions stay float.

``backend.quantized_engine``: ``x86`` (PyTorch's default: oneDNN or fbgemm per op — on VNNI CPUs most
convolutions go to oneDNN), ``fbgemm`` or ``onednn``. With ``fbgemm``, fbgemm's own
``FBGEMM_ENABLE_INSTRUCTIONS=AVX2`` makes a VNNI machine run the AVX2 kernels of a CPU it is not (recorded in
``int8.kernel_isa``): how qbench checks its AVX2 emulation against the real kernel.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from qbench.backends.deployment import DeployContext, Deployment
from qbench.data.batching import Outputs, module_outputs

if TYPE_CHECKING:
    from qbench.quant.simulate import QuantizedLayer


def deploy(ctx: DeployContext) -> Deployment:
    from qbench.measure.kernel_rule import integer_kernel
    from qbench.measure.opmix import torch_op_mix

    _set_engine(ctx.cfg.backend.quantized_engine)
    method = ctx.cfg.quant.method
    if method == "none":
        model, tags = ctx.fp32_model, {"torch.quantization_api": "none"}
    elif method == "dynamic":
        model, tags = _dynamic(ctx)
    elif method == "weight_only":
        model, tags = _weight_only(ctx)
    else:
        model, tags = _static(ctx)
    model.eval()
    tags["torch.quantized_engine"] = torch.backends.quantized.engine
    layers = ctx.layer_counts()
    metrics, mix_tags = torch_op_mix(model, layers)
    tags.update(mix_tags)
    bits = "int4" if method == "weight_only" else "int8"
    artifact = ctx.workdir / ("model_fp32.pt" if method == "none" else f"model_{bits}.pt")
    torch.save(model.state_dict(), artifact)
    kernel = "fp32" if method == "none" else integer_kernel(metrics, bits)

    def prepare(inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return tuple(t.contiguous() for t in inputs.values())

    @torch.inference_mode()
    def run(args: tuple[torch.Tensor, ...]) -> Any:
        return model(*args)

    def outputs(result: Any) -> Outputs:
        return {name: t.float() for name, t in module_outputs(result).items()}

    return Deployment(kernel=kernel, prepare=prepare, run=run, outputs=outputs, artifacts=[artifact], tags=tags,
                      metrics=metrics, runtime=model, quantized_weights=ctx.int8_stored_weights())


def _set_engine(engine: str) -> None:
    """Select ``backend.quantized_engine`` (validated against qbench's names; whether this PyTorch build has it
    is only known here)."""
    supported = torch.backends.quantized.supported_engines
    if engine not in supported:
        raise RuntimeError(f"backend.quantized_engine={engine} is not built into this PyTorch "
                           f"(supported: {', '.join(supported)})")
    torch.backends.quantized.engine = engine


def _simulated_layers(ctx: DeployContext) -> dict[str, QuantizedLayer]:
    from qbench.quant.simulate import quantized_layers

    assert ctx.simulated_model is not None, "a quantized cell needs its simulated model"
    return {layer.name: layer for layer in quantized_layers(ctx.simulated_model)}


def _quantized_weight(layer: QuantizedLayer) -> torch.Tensor:
    """The simulated layer's codes as a torch quantized tensor (qint8)."""
    q = layer.weight_q
    assert q is not None
    codes = q.codes.to(torch.int8)
    if q.granularity == "per_channel":
        return torch._make_per_channel_quantized_tensor(codes, q.scale.double(), q.zero_point.long(), 0)
    return torch._make_per_tensor_quantized_tensor(codes, float(q.scale[0]), int(q.zero_point[0]))


def _qconfig(per_channel: bool) -> Any:
    from torch.ao.quantization import QConfig
    from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

    # narrow symmetric int8 weights (codes in [-127, 127]), like qbench's simulation and ONNX Runtime
    weight = (PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                                 quant_min=-127, quant_max=127) if per_channel else
              MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric, quant_min=-127,
                                       quant_max=127))
    return QConfig(activation=MinMaxObserver.with_args(dtype=torch.quint8, reduce_range=False), weight=weight)


def _static(ctx: DeployContext) -> tuple[nn.Module, dict[str, str]]:
    from torch.ao.quantization import QConfigMapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    from qbench.quant.simulate import unwrap_simulated

    q = ctx.cfg.quant
    sim_layers = _simulated_layers(ctx)
    mapping = QConfigMapping().set_global(_qconfig(q.weights.granularity == "per_channel"))
    for name in _excluded(ctx, sim_layers):
        mapping.set_module_name(name, None)
    example = (ctx.splits.calibration.tensors[0][:1],)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FX quantization is deprecated in favour of pt2e (see module docstring)
        # start from the simulated model's float weights (BN folded; QAT-trained for QAT) so that the
        # observers qbench does not override are calibrated on the network that is deployed
        try:
            prepared = prepare_fx(unwrap_simulated(ctx.simulated_model), mapping, example)
        except Exception as exc:  # FX tracing fails in many ways (TraceError, TypeError, ...) on python control flow
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise RuntimeError("static int8 on torch_int8 needs an FX-traceable model; use quant.method=dynamic or "
                               f"backend=torch ({type(exc).__name__}: {first[:200]})") from exc
        samples = min(q.calibration.samples, len(ctx.splits.calibration))
        with torch.no_grad():
            for batch in ctx.splits.calibration_inputs(samples, q.calibration.batch_size):
                prepared(batch)
        injected_acts, shared = _inject_activation_ranges(prepared, sim_layers)
        converted = convert_fx(prepared)
    injected_weights = _inject_weights(converted, sim_layers)
    tags = {"torch.quantization_api": "torch.ao.quantization.quantize_fx",
            "torch.injected": f"weights={injected_weights},activations={injected_acts},shared_kept={shared}"}
    if q.weights.bits < 8:  # the simulation's 4-bit codes, each in a qint8 (fbgemm/oneDNN int8 kernels)
        tags["torch.weight_codes"] = f"{q.weights.bits}-bit codes stored in int8 (int8 kernels)"
    return converted, tags


def _excluded(ctx: DeployContext, sim_layers: dict[str, QuantizedLayer]) -> list[str]:
    """Conv/Linear layers the simulation kept in float (quant.exclude) stay float here too."""
    return [name for name, module in ctx.fp32_model.named_modules()
            if isinstance(module, (nn.Conv2d, nn.Linear)) and name not in sim_layers]


def _inject_activation_ranges(prepared: torch.fx.GraphModule, sim_layers: dict[str, QuantizedLayer]
                              ) -> tuple[int, int]:
    """Give the observer in front of each simulated layer that layer's input range; returns (set, skipped).

    An observer instance that FX shares between several tensors (pooling/flatten/reshape reuse their input's
    quantization parameters) is left with its own calibrated range: forcing a consumer's range on it would
    also clip the producer's output."""
    from collections import Counter

    from torch.ao.quantization.observer import ObserverBase

    uses = Counter(id(prepared.get_submodule(n.target)) for n in prepared.graph.nodes
                   if n.op == "call_module" and isinstance(prepared.get_submodule(n.target), ObserverBase))
    assigned: dict[int, tuple[float, int]] = {}
    skipped = 0
    for node in prepared.graph.nodes:
        if node.op != "call_module" or node.target not in sim_layers or not node.args:
            continue
        source = node.args[0]
        if getattr(source, "op", None) != "call_module":
            continue
        observer = prepared.get_submodule(source.target)
        iq = sim_layers[node.target].input_quantizer
        if not isinstance(observer, ObserverBase) or iq is None or not iq.calibrated:
            continue
        scale, zero_point = float(iq.scale.reshape(-1)[0]), int(iq.zero_point.reshape(-1)[0])
        key = id(observer)
        if uses[key] > 1 or (key in assigned and assigned[key] != (scale, zero_point)):
            skipped += 1
            continue
        assigned[key] = (scale, zero_point)
        # a u8 observer given [(0 - zp) * s, (255 - zp) * s] computes exactly scale s and zero point zp
        observer.min_val = torch.tensor((0 - zero_point) * scale)
        observer.max_val = torch.tensor((255 - zero_point) * scale)
    return len(assigned), skipped


def _inject_weights(converted: nn.Module, sim_layers: dict[str, QuantizedLayer]) -> int:
    injected = 0
    for name, layer in sim_layers.items():
        try:
            module = converted.get_submodule(name)
        except AttributeError:
            continue
        if hasattr(module, "set_weight_bias") and layer.weight_q is not None:
            bias = layer.layer.bias.detach().float() if layer.layer.bias is not None else None
            module.set_weight_bias(_quantized_weight(layer), bias)
            injected += 1
    return injected


def _dynamic(ctx: DeployContext) -> tuple[nn.Module, dict[str, str]]:
    from torch.ao.quantization import quantize_dynamic
    from torch.ao.quantization.qconfig import default_dynamic_qconfig, per_channel_dynamic_qconfig

    per_channel = ctx.cfg.quant.weights.granularity == "per_channel"
    sim_layers = _simulated_layers(ctx)
    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    targets = {name: qconfig for name, module in ctx.fp32_model.named_modules()
               if isinstance(module, nn.Linear) and name in sim_layers}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = quantize_dynamic(copy.deepcopy(ctx.fp32_model).eval(), targets, dtype=torch.qint8)
    injected = _inject_weights(model, {n: sim_layers[n] for n in targets})
    return model, {"torch.quantization_api": "torch.ao.quantization.quantize_dynamic (Linear only)",
                   "torch.injected": f"weights={injected}"}


def _weight_only(ctx: DeployContext) -> tuple[nn.Module, dict[str, str]]:
    """The simulated model with each quantized Linear swapped for the int4 kernel's module (qbench's codes and
    scales); no tracing, so any nn.Module deploys. Layers the simulation kept float stay float."""
    from qbench.backends.torch_int8.int4 import N_MULTIPLE, Int4WeightOnlyLinear
    from qbench.quant.simulate import quantized_layers

    assert ctx.simulated_model is not None, "a quantized cell needs its simulated model"
    model = copy.deepcopy(ctx.simulated_model)
    swapped: list[Int4WeightOnlyLinear] = []
    for layer in quantized_layers(model):
        if isinstance(layer.layer, nn.Linear):
            module = Int4WeightOnlyLinear.from_quantized(layer)
            swapped.append(module)
        else:  # not simulated as weight-only Linear here (native_layer_types): float
            module = layer.layer
        model.set_submodule(layer.name, module)
    group_sizes = sorted({m.group_size for m in swapped})
    return model.eval(), {
        "torch.quantization_api": "aten._weight_int4pack_mm_for_cpu (int4 weight-only Linear)",
        "int4.activation_dtype": ",".join(sorted({str(m.compute_dtype).removeprefix("torch.") for m in swapped})),
        "int4.layers": str(len(swapped)),
        "int4.group_size": ",".join(map(str, group_sizes)),
        # layers whose input is zero-padded to whole groups / whose outputs are padded to a multiple of N_MULTIPLE
        "int4.padded": f"k={sum(1 for m in swapped if m.k_pad)},n={sum(1 for m in swapped if m.n_pad)}"
                       f" (n multiple of {N_MULTIPLE})",
    }
