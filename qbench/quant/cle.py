"""Cross-layer equalization and bias correction (Nagel et al. 2019, "Data-Free Quantization Through Weight
Equalization and Bias Correction"), run on a simulated model whose BatchNorm is already folded
(:func:`qbench.quant.simulate.fold_batchnorm`).

**Cross-layer equalization** (data-free). For two consecutive layers y = W2 f(W1 x + b1) + b2 where f is ReLU,
ReLU6 or nothing, and f(x / s) = f(x) / s for s > 0, output channel i of W1 (and b1_i) is divided by s_i and input
channel i of W2 multiplied by it: the function is unchanged, and s_i = sqrt(r1_i / r2_i) (r = the channel's
largest |weight|) gives both channels the same range sqrt(r1_i r2_i), so a per-tensor weight grid no longer wastes
its levels on a few wide channels. Pairs are found in the model's torch.fx graph: a Conv2d/Linear whose only user
is the activation (or the next layer) and whose activation's only user is the next layer; each layer may be a
plain (groups = 1) or a depthwise convolution — mobilenet_v2's expand -> depthwise -> project chain is the case
that matters, where folded depthwise filters differ in range by orders of magnitude. Chains are equalized in
rounds until the scales settle (``rounds``). ReLU6 is not scale-equivariant (its clip at 6): it becomes a
:class:`ChannelClamp` min(relu(x), 6 / s_i) with per-channel bounds, so the FP32 function stays exactly the same
(the paper replaces ReLU6 by ReLU, which changes it); exported to ONNX as Relu + Min.

**Bias correction**, *empirical* on the calibration split rather than analytic from BN statistics: BN is folded
away before the algorithms run, the analytic form E[x] assumes Gaussian pre-activations clipped by a ReLU that
mobilenet_v2's ReLU6 and residual adds do not give, and the calibration data is there anyway. Layer by layer in
execution order, E[y] of the float network minus E[y] of the network with quantized weights (earlier layers
already corrected, activations in float: their ranges are calibrated after this) is added to the layer's bias:
the shift weight rounding adds to each output channel's mean is removed. Cost: about L/2 forward passes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import fx, nn

from qbench.quant.layerwise import execution_order, float_activations, float_output_means, output_mean
from qbench.quant.simulate import QuantizedLayer, quantized_layers

_SCALE_FREE = (nn.ReLU, nn.Identity, nn.Dropout)  # f(x / s) = f(x) / s for s > 0 (Dropout: eval mode)
_SCALE_FREE_FUNCTIONS = (F.relu, torch.relu)


class ChannelClamp(nn.Module):
    """ReLU6 after equalization: min(relu(x), upper) with one upper bound per channel (6 / s_i); ``spatial``: the
    channels are dim 1 of an [N, C, H, W] tensor (else the last dim). No python branching on the input: FX traces
    it (torch_int8)."""

    def __init__(self, channels: int, upper: float = 6.0, spatial: bool = True) -> None:
        super().__init__()
        shape = (1, channels, 1, 1) if spatial else (channels,)
        self.register_buffer("upper", torch.full(shape, float(upper)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.minimum(F.relu(x), self.upper)


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, (QuantizedLayer, ChannelClamp)) or super().is_leaf_module(m, module_qualified_name)


def _graph(model: nn.Module) -> fx.Graph | None:
    if isinstance(model, fx.GraphModule):
        return model.graph
    try:
        return _Tracer().trace(model)
    except Exception:  # python control flow: no graph, no pairs
        return None


def _depthwise(layer: nn.Module) -> bool:
    return isinstance(layer, nn.Conv2d) and layer.groups == layer.in_channels == layer.out_channels > 1


def _plain(layer: nn.Module) -> bool:
    return isinstance(layer, nn.Linear) or (isinstance(layer, nn.Conv2d) and layer.groups == 1)


def _out_channels(layer: nn.Module) -> int:
    return layer.weight.shape[0]


def _in_channels(layer: nn.Module) -> int:
    return layer.weight.shape[0] if _depthwise(layer) else layer.weight.shape[1]


Pair = tuple[QuantizedLayer, str | None, QuantizedLayer]  # first, activation module name (or None), second


def equalization_pairs(model: nn.Module) -> list[Pair]:
    """Consecutive quantized (Conv2d/Linear, plain or depthwise) pairs with a scale-equivariant op or nothing
    between them, each tensor on the way used once."""
    graph = _graph(model)
    if graph is None:
        return []
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1

    def module(node: fx.Node) -> nn.Module | None:
        return modules.get(node.target) if node.op == "call_module" else None  # type: ignore[arg-type]

    def between(node: fx.Node) -> bool:
        m = module(node)
        if isinstance(m, _SCALE_FREE):  # stateless: may be shared
            return True
        if isinstance(m, (nn.ReLU6, ChannelClamp)):  # its per-channel bounds belong to this pair
            return calls[node.target] == 1  # type: ignore[index]
        return m is None and node.op == "call_function" and node.target in _SCALE_FREE_FUNCTIONS and len(node.args) == 1

    pairs: list[Pair] = []
    for node in graph.nodes:
        first = module(node)
        if not isinstance(first, QuantizedLayer) or first.weight_spec is None or len(node.users) != 1:
            continue
        nxt, act = next(iter(node.users)), None
        if between(nxt) and len(nxt.users) == 1:
            act = nxt.target if nxt.op == "call_module" else None
            nxt = next(iter(nxt.users))
        second = module(nxt)
        if (not isinstance(second, QuantizedLayer) or second.weight_spec is None or calls[nxt.target] != 1
                or first is second):
            continue
        a, b = first.layer, second.layer
        if ((_plain(a) or _depthwise(a)) and (_plain(b) or _depthwise(b)) and type(a) is type(b)
                and _out_channels(a) == _in_channels(b)):
            pairs.append((first, act if isinstance(act, str) else None, second))
    return pairs


@torch.no_grad()
def _equalize(model: nn.Module, pair: Pair) -> float:
    """Equalize one pair in place; returns max |log s| (0 when already equal)."""
    first, act, second = pair
    w1, w2 = first.layer.weight, second.layer.weight
    r1 = w1.abs().reshape(w1.shape[0], -1).amax(1)
    r2 = (w2.abs().reshape(w2.shape[0], -1) if _depthwise(second.layer)
          else w2.abs().transpose(0, 1).reshape(w2.shape[1], -1)).amax(1)
    s = torch.where((r1 > 0) & (r2 > 0), (r1 / r2.clamp(min=1e-12)).sqrt(), torch.ones_like(r1))
    view1 = (-1, *([1] * (w1.dim() - 1)))
    w1.div_(s.reshape(view1))
    if first.layer.bias is not None:
        first.layer.bias.div_(s)
    if _depthwise(second.layer):
        w2.mul_(s.reshape(-1, *([1] * (w2.dim() - 1))))
    else:
        w2.mul_(s.reshape(1, -1, *([1] * (w2.dim() - 2))))
    if act is not None:
        module = model.get_submodule(act)
        if isinstance(module, nn.ReLU6):
            module = ChannelClamp(len(s), 6.0, spatial=isinstance(first.layer, nn.Conv2d))
            model.set_submodule(act, module)
        if isinstance(module, ChannelClamp):
            module.upper.div_(s.reshape(module.upper.shape))
    return float(s.log().abs().max())


def cross_layer_equalization(model: nn.Module, rounds: int = 20, tolerance: float = 1e-3) -> tuple[int, int]:
    """Equalize every pair of ``model`` (a simulated model) in place, re-quantize the changed weights RTN on their
    own grids; returns (pairs, rounds run)."""
    pairs = equalization_pairs(model)
    done = 0
    while pairs and done < rounds:
        done += 1
        if max(_equalize(model, pair) for pair in pairs) < math.log1p(tolerance):
            break
    for layer in {id(p): p for first, _, second in pairs for p in (first, second)}.values():
        layer.quantize_weight()
    return len(pairs), done


@torch.no_grad()
def bias_correction(model: nn.Module, batches: Sequence[tuple[torch.Tensor, ...]]) -> int:
    """Empirical bias correction of every quantized layer (module docstring); returns the layers corrected."""
    if not batches:
        return 0
    corrected = 0
    # the float network's means first: the layers' biases are shared with it and change below
    reference = float_output_means(model, batches)
    with float_activations(model):
        for layer in execution_order(model, batches[0]):
            if layer.weight_spec is None or layer.weight_q is None or layer.name not in reference:
                continue
            shift = reference[layer.name] - output_mean(model, layer, batches)
            inner = layer.layer
            if inner.bias is None:
                inner.bias = nn.Parameter(torch.zeros_like(shift), requires_grad=False)
            inner.bias.add_(shift.to(inner.bias.dtype))
            corrected += 1
    return corrected


def apply_cle(model: nn.Module, batches: Sequence[tuple[torch.Tensor, ...]], *, bias_correct: bool = True,
              rounds: int = 20) -> dict[str, float]:
    """CLE then (optionally) bias correction on a simulated model; the figures the cell records."""
    if any(layer.input_smoothing is not None for layer in quantized_layers(model)):
        raise ValueError("CLE runs on a freshly built simulated model (inputs already smoothed)")
    pairs, done = cross_layer_equalization(model, rounds)
    corrected = bias_correction(model, batches) if bias_correct else 0
    return {"quant.cle_pairs": float(pairs), "quant.cle_rounds": float(done),
            "quant.bias_corrected_layers": float(corrected)}
