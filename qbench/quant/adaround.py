"""AdaRound (Nagel et al. 2020, "Up or Down? Adaptive Rounding for Post-Training Quantization") and QDrop (Wei et
al. 2022), layer by layer on a simulated model, each Conv2d/Linear on its own grid.

**AdaRound.** The grid (scale, zero point per row: bits, granularity, observer of the layer's weight spec) is the
round-to-nearest one; only the rounding direction of each weight is learned. Codes are
clamp(floor(w / s) + h(V) + z, qmin, qmax) with the rectified sigmoid h(V) = clamp(sigmoid(V) (zeta - gamma) +
gamma, 0, 1) (zeta = 1.1, gamma = -0.1), V initialised so that h(V) equals the fractional part (the soft weight
starts at the float weight). Loss: ||W x_fp - W~ Q(x^)||^2 (summed over output channels, averaged over samples
and positions) + reg_weight * sum(1 - |2 h(V) - 1|^beta), with beta annealed from ``beta_start`` to ``beta_end``
after the first ``warmup`` fraction of the iterations (regularizer off before), Adam on V. x_fp is the layer's
input in the float network, x^ its input in the network quantized so far (earlier layers already rounded,
activations quantized: the "asymmetric" reconstruction of the paper's section 5) and Q the layer's own input
quantizer, so each layer also absorbs the error of the layers before it. Finally h is rounded (V >= 0 -> up)
and the integer codes go to ``QuantizedLayer.set_weight_q``: every backend deploys exactly these codes. A layer
whose learned codes reconstruct worse than round-to-nearest on its calibration inputs keeps the RTN codes
(``quant.adaround_better_than_rtn`` counts the layers whose learned codes were kept).

**QDrop rather than BRECQ.** BRECQ reconstructs whole blocks (residual blocks, mobilenet's inverted residuals),
which needs each architecture's block boundaries (graph knowledge qbench does not have for arbitrary models)
and a forward/backward through several layers per step. QDrop's finding is that most of BRECQ's gain over
layer-wise AdaRound at low activation bits comes from letting the reconstruction see activation quantization
noise, and flatter minima from seeing it only partly: during reconstruction each element of the layer's input
is Q(x^) with probability 1 - ``drop_prob`` and x_fp otherwise. Added on top of AdaRound that is one
``torch.where`` per step, works for any model, and costs the same as AdaRound; here it runs layer-wise, not on
blocks (a simplification of the paper; the drop is its contribution).

Activation ranges must exist before the reconstruction (Q above): the model is calibrated first (after CLE,
option ``cle``) and keeps those ranges, so what was optimised is what runs. Iterations default to 300 per layer
at batch 32 (the paper: 10k-20k; lr 1e-2 instead of its 1e-3 to match). Cost on the 2-vCPU Intel Xeon (AVX-512
VNNI + AMX) this was written on, one thread: mobilenet_v2 (53 layers, 2.2 M weights) 62 s at load ~2.5 and 133 s
at load ~8; resnet18 (21 layers, 11 M weights: each step's elementwise work on the weights, not the convolutions,
dominates) 322 s at load ~7, over a 2-minute budget — ``iterations: 100`` took 99 s there and recovered as much
(98.33 % naive -> 99.72 %, FP32 99.44 %).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from qbench.config.names import ALGORITHM_DEFAULTS
from qbench.quant.affine import QuantizedTensor, from_rows, qrange, to_rows
from qbench.quant.layerwise import execution_order, layer_inputs
from qbench.quant.simulate import QuantizedLayer, calibrate

ZETA, GAMMA = 1.1, -0.1


def rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


class LearnedRounding(nn.Module):
    """The rounding of one weight tensor on a fixed grid (the grid of ``q``, an RTN QuantizedTensor)."""

    def __init__(self, weight: torch.Tensor, q: QuantizedTensor) -> None:
        super().__init__()
        self.q = q
        rows = to_rows(weight.detach().float(), q.granularity, q.group_size)
        self.scale = q.scale.unsqueeze(1).float()
        self.zero_point = q.zero_point.unsqueeze(1).float()
        self.qmin, self.qmax = qrange(q.bits, q.symmetric)
        scaled = rows / self.scale
        floor = torch.floor(scaled)
        self.base = floor + self.zero_point  # the code rounding down gives
        rest = (scaled - floor).clamp(1e-4, 1 - 1e-4)
        self.v = nn.Parameter(-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1))

    def soft_weight(self, h: torch.Tensor) -> torch.Tensor:
        """The weight with codes base + h (h = rectified_sigmoid(v), computed once per step by the caller)."""
        codes = torch.clamp(self.base + h, self.qmin, self.qmax)
        return from_rows((codes - self.zero_point) * self.scale, self.q.shape, self.q.granularity)

    @staticmethod
    def regularizer(h: torch.Tensor, beta: float) -> torch.Tensor:
        return (1 - (2 * h - 1).abs().pow(beta)).sum()

    @torch.no_grad()
    def hard_codes(self) -> QuantizedTensor:
        """The learned rounding as integer codes on the same grid."""
        codes = torch.clamp(self.base + (self.v >= 0).float(), self.qmin, self.qmax)
        codes = from_rows(codes, self.q.shape, self.q.granularity).round().to(self.q.codes.dtype)
        return QuantizedTensor(codes, self.q.scale, self.q.zero_point, self.q.bits, self.q.symmetric,
                               self.q.granularity, self.q.shape, self.q.group_size, self.q.axis)


def _compute(layer: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, nn.Conv2d):
        return layer._conv_forward(x, weight, layer.bias)
    return F.linear(x, weight, layer.bias)


def _reconstruction(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error summed over output channels, averaged over samples (and positions / tokens)."""
    channel_dim = 1 if out.dim() == 4 else -1
    return (out - target).square().sum(channel_dim).mean()


def round_layer(layer: QuantizedLayer, x_fp: torch.Tensor, x_q: torch.Tensor, opts: Mapping[str, Any],
                drop_prob: float = 0.0) -> tuple[QuantizedTensor, dict[str, float]]:
    """Learned codes for ``layer`` given its inputs in the float (``x_fp``) and quantized (``x_q``, before the
    input quantizer) networks; ``drop_prob`` > 0 is QDrop. Returns the codes and the reconstruction error of
    round-to-nearest and of the learned rounding on these inputs (float activations dropped: none)."""
    assert layer.weight_q is not None
    opts = {**ALGORITHM_DEFAULTS["adaround"], **opts}
    inner = layer.layer
    generator = torch.Generator().manual_seed(int(opts["seed"]))
    rounding = LearnedRounding(inner.weight, layer.weight_q)
    with torch.no_grad():
        target = _compute(inner, x_fp, inner.weight.detach())
        quantized = layer.input_quantizer(x_q) if layer.input_quantizer is not None else x_q
    iterations, batch = int(opts["iterations"]), int(opts["batch_size"])
    warmup = int(float(opts["warmup"]) * iterations)
    beta_start, beta_end = float(opts["beta_start"]), float(opts["beta_end"])
    optimizer = torch.optim.Adam([rounding.v], lr=float(opts["lr"]))
    n = len(x_fp)
    for step in range(iterations):
        idx = torch.randint(0, n, (min(batch, n),), generator=generator)
        x = quantized[idx]
        if drop_prob > 0:
            keep_float = torch.rand(x.shape, generator=generator) < drop_prob
            x = torch.where(keep_float, x_fp[idx], x)
        h = rectified_sigmoid(rounding.v)
        loss = _reconstruction(_compute(inner, x, rounding.soft_weight(h)), target[idx])
        if step >= warmup:
            progress = (step - warmup) / max(iterations - warmup, 1)
            beta = beta_end + 0.5 * (beta_start - beta_end) * (1 + math.cos(math.pi * progress))
            loss = loss + float(opts["reg_weight"]) * rounding.regularizer(h, beta)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    codes = rounding.hard_codes()
    with torch.no_grad():
        errors = {"rtn": float(_reconstruction(_compute(inner, quantized, layer.weight_q.dequantize()), target)),
                  "learned": float(_reconstruction(_compute(inner, quantized, codes.dequantize()), target))}
    return codes, errors


def apply_adaround(model: nn.Module, batches: Sequence[tuple[torch.Tensor, ...]], opts: Mapping[str, Any],
                   drop_prob: float = 0.0) -> dict[str, float]:
    """AdaRound (``drop_prob`` = 0) or QDrop on every quantized layer of ``model`` in execution order; calibrates
    the static activation ranges first when they are not yet. Returns cost figures and how many layers' learned
    rounding beat round-to-nearest on their calibration inputs."""
    if not batches:
        return {}
    static = [layer.input_quantizer for layer in execution_order(model, batches[0])
              if layer.input_quantizer is not None and not layer.input_quantizer.dynamic]
    if any(not q.calibrated for q in static):
        calibrate(model, batches)
    layers = [layer for layer in execution_order(model, batches[0]) if layer.weight_spec is not None]
    better = 0
    for layer in layers:
        x_fp = layer_inputs(model, layer, batches, float_model=True)
        x_q = layer_inputs(model, layer, batches, float_model=False)
        with torch.enable_grad():
            codes, errors = round_layer(layer, x_fp, x_q, opts, drop_prob)
        if errors["learned"] <= errors["rtn"]:
            layer.set_weight_q(codes)
            better += 1
    return {"quant.algorithm_iterations": float(int(opts["iterations"]) * len(layers)),
            "quant.adaround_layers": float(len(layers)), "quant.adaround_better_than_rtn": float(better)}
