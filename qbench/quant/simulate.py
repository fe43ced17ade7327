"""Simulated quantization of a PyTorch model (fake-quant): what an integer kernel would compute, in float.

The FP32 model is traced with torch.fx and BatchNorm is folded into the preceding convolution
(``torch.fx.experimental.optimization.fuse``), as every integer runtime does before quantizing (a model FX cannot
trace, e.g. a transformer with python control flow, is used as it is when it has no BatchNorm). Each
Conv2d/Linear then becomes a :class:`QuantizedLayer` that quantizes its *input activation* (static:
calibrated range; dynamic: the range of the current batch) and its *weight* (integer codes + scale + zero
point, kept as a :class:`~qbench.quant.affine.QuantizedTensor`). Other ops (ReLU, add, pooling) run in
float on quantized inputs, which is where deployed runtimes may differ: the deployment-gap metrics of a
cell on a real backend measure exactly that difference.
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from qbench.quant.affine import (
    QuantizedTensor,
    compute_qparams,
    fake_quantize,
    from_rows,
    qrange,
    quantize_tensor,
    to_rows,
)
from qbench.quant.observers import ActivationObserver, estimate_range

QUANTIZABLE = (nn.Conv2d, nn.Linear)
# Bump when QuantizedLayer/InputQuantizer change their attributes: caches hold pickled simulated models (QAT,
# GPTQ/AWQ results), and one pickled from an older class lacks the new attributes.
SIMULATION_VERSION = 2


class InputQuantizer(nn.Module):
    """Fake-quantizes a layer's input: ``static`` (range from calibration) or ``dynamic`` (per batch)."""

    def __init__(self, spec, dynamic: bool = False) -> None:
        super().__init__()
        self.spec = spec
        self.dynamic = dynamic
        self.per_channel = spec.granularity == "per_channel"
        self.qmin, self.qmax = qrange(spec.bits, spec.symmetric)
        self.observer: ActivationObserver | None = None
        self.register_buffer("scale", torch.ones(1))
        self.register_buffer("zero_point", torch.zeros(1, dtype=torch.int32))
        self.calibrated = False
        # (scale, zero point) of the last forward pass, for the ISA emulation of the consuming layer
        self.last_qparams: tuple[torch.Tensor, torch.Tensor] | None = None

    def start_observing(self) -> None:
        self.observer = ActivationObserver(self.spec, per_channel=self.per_channel)

    def freeze(self) -> None:
        """Turn the observed statistics into a fixed scale/zero point."""
        if self.dynamic:
            return
        if self.observer is None:
            raise RuntimeError("calibrate() must run before freeze()")
        lo, hi = self.observer.range()
        scale, zero_point = compute_qparams(lo, hi, self.spec.bits, self.spec.symmetric)
        self.scale, self.zero_point = scale, zero_point
        self.observer = None
        self.calibrated = True

    def make_scale_learnable(self) -> None:
        """LSQ-style: the calibrated scale becomes a trained parameter (QAT)."""
        scale = self.scale.detach().clone()
        del self.scale
        self.scale = nn.Parameter(scale)

    def _shape(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return t.reshape(1, -1, *([1] * (x.dim() - 2))) if self.per_channel else t

    def freeze_learned_scale(self) -> None:
        """After QAT: the learned scale becomes a fixed buffer again."""
        if isinstance(self.scale, nn.Parameter):
            scale = self.scale.detach().abs().clamp(min=torch.finfo(torch.float32).eps).clone()
            del self.scale
            self.register_buffer("scale", scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observer is not None:
            self.observer.observe(x)
            return x
        if self.dynamic:
            scale, zp = compute_qparams(x.detach().amin(), x.detach().amax(), self.spec.bits, self.spec.symmetric)
            self.last_qparams = (scale, zp)
            return fake_quantize(x, scale, zp, self.qmin, self.qmax)
        if not self.calibrated:
            raise RuntimeError("static input quantizer used before calibration")
        self.last_qparams = (self.scale.detach(), self.zero_point)
        scale = self.scale
        if isinstance(scale, nn.Parameter):  # LSQ: scale the scale's gradient by 1/sqrt(numel * qmax)
            scale = lsq_grad_scale(scale.abs() + 1e-12, (x[0].numel() * self.qmax) ** -0.5)
        return fake_quantize(x, self._shape(scale, x), self._shape(self.zero_point, x), self.qmin, self.qmax)


def lsq_grad_scale(t: torch.Tensor, factor: float) -> torch.Tensor:
    """Same value as ``t``, gradient multiplied by ``factor`` (LSQ, Esser et al. 2020)."""
    return (t - t * factor).detach() + t * factor


class QuantizedLayer(nn.Module):
    """A Conv2d or Linear (BN already folded) with quantized weights and, optionally, quantized input."""

    def __init__(self, layer: nn.Module, name: str, weight_spec, input_quantizer: InputQuantizer | None) -> None:
        super().__init__()
        self.layer = layer
        self.name = name
        self.weight_spec = weight_spec
        self.input_quantizer = input_quantizer
        self.weight_q: QuantizedTensor | None = None
        self.qat = False
        self.weight_scale: nn.Parameter | None = None
        # an ISA whose int8 arithmetic is reproduced (qbench/quant/isa_emulation.py), None = exact
        self.emulate_isa: str | None = None
        # Linear only: per-input-channel factor (AWQ / SmoothQuant's 1/s, qbench/quant/algorithms.py) the input
        # is multiplied by before it is quantized; the weight then holds W * s. None = no smoothing
        self.register_buffer("input_smoothing", None)
        # True: compute with the inner float layer, nothing quantized nor smoothed (the statistics pass of
        # qbench/quant/algorithms.py, which sees the float network)
        self.float_forward = False

    def set_weight_q(self, q: QuantizedTensor) -> None:
        """Use ``q`` (codes + qparams) as this layer's quantized weight."""
        self.weight_q = q
        self.register_buffer("weight_fq", q.dequantize(), persistent=False)

    def quantize_weight(self) -> QuantizedTensor:
        """Compute integer codes + scale + zero point of the current weight with the spec's observer."""
        spec, w = self.weight_spec, self.layer.weight.detach()
        rows = to_rows(w, spec.granularity, spec.group_size)
        lo, hi = estimate_range(rows, spec)
        self.set_weight_q(quantize_tensor(w, lo, hi, spec.bits, spec.symmetric, spec.granularity, spec.group_size))
        assert self.weight_q is not None
        return self.weight_q

    def enable_qat(self, learnable_scales: bool) -> None:
        """Fake-quantize the weight on every forward (STE) so training sees the quantization error."""
        self.qat = True
        if learnable_scales:
            q = self.weight_q or self.quantize_weight()
            self.weight_scale = nn.Parameter(q.scale.clone())
            if self.input_quantizer is not None and not self.input_quantizer.dynamic:
                self.input_quantizer.make_scale_learnable()

    def _qat_qparams(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale/zero point used while training: learned (LSQ), min/max of the current weight, or (for the
        costly observers: mse, percentile, histogram) the scale found once before training."""
        spec = self.weight_spec
        _, qmax = qrange(spec.bits, spec.symmetric)
        if self.weight_scale is not None:
            assert self.weight_q is not None
            factor = (rows.shape[1] * qmax) ** -0.5
            return lsq_grad_scale(self.weight_scale.abs() + 1e-12, factor), self.weight_q.zero_point
        if spec.observer == "minmax":
            return compute_qparams(*estimate_range(rows, spec), spec.bits, spec.symmetric)
        q = self.weight_q or self.quantize_weight()
        return q.scale, q.zero_point

    def _weight_fake_quant(self) -> torch.Tensor:
        spec, w = self.weight_spec, self.layer.weight
        rows = to_rows(w, spec.granularity, spec.group_size)
        scale, zp = self._qat_qparams(rows)
        qmin, qmax = qrange(spec.bits, spec.symmetric)
        fq_rows = fake_quantize(rows, scale.unsqueeze(1), zp.unsqueeze(1), qmin, qmax)
        return from_rows(fq_rows, w.shape, spec.granularity)

    def finish_qat(self) -> None:
        """Freeze the trained weight into integer codes with exactly the qparams training used."""
        spec = self.weight_spec
        w = self.layer.weight.detach()
        rows = to_rows(w, spec.granularity, spec.group_size)
        with torch.no_grad():
            scale, zp = self._qat_qparams(rows)
        scale = scale.detach().abs().clamp(min=torch.finfo(torch.float32).eps)
        qmin, qmax = qrange(spec.bits, spec.symmetric)
        lo, hi = (qmin - zp) * scale, (qmax - zp) * scale
        self.set_weight_q(quantize_tensor(w, lo, hi, spec.bits, spec.symmetric, spec.granularity, spec.group_size))
        self.qat = False
        self.weight_scale = None
        if self.input_quantizer is not None:
            self.input_quantizer.freeze_learned_scale()

    def weight(self) -> torch.Tensor:
        if self.weight_spec is None:
            return self.layer.weight
        if self.qat:
            return self._weight_fake_quant()
        if self.weight_q is None:
            raise RuntimeError(f"{self.name}: weights not quantized yet")
        return self.weight_fq

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.float_forward:
            return self.layer(x)
        if self.input_smoothing is not None:
            x = x * self.input_smoothing
        iq = self.input_quantizer
        if iq is not None:
            x = iq(x)
        if isinstance(self.layer, nn.Conv2d):
            y = self.layer._conv_forward(x, self.weight(), self.layer.bias)
        else:
            y = F.linear(x, self.weight(), self.layer.bias)
        if self.emulate_isa and iq is not None and iq.observer is None and not self.qat:
            y = y + self._saturation_error(x)
        return y

    @torch.no_grad()
    def _saturation_error(self, x_quantized: torch.Tensor) -> torch.Tensor | float:
        """The float error the target ISA's u8 x s8 pair saturation adds to this layer's output."""
        from qbench.quant.isa_emulation import saturation_error

        iq, q = self.input_quantizer, self.weight_q
        if (iq is None or iq.last_qparams is None or q is None or iq.per_channel or iq.spec.symmetric
                or iq.spec.bits != 8 or not q.symmetric or q.granularity == "per_group"):
            return 0.0  # only u8 (per-tensor) x s8 (per-tensor/channel) products take the pair shortcut
        scale, zero_point = iq.last_qparams
        s_a, zp = float(scale.reshape(-1)[0]), int(zero_point.reshape(-1)[0])
        codes = torch.round(x_quantized / s_a) + zp
        error = saturation_error(self.layer, codes, zp, q.codes)
        if error is None:
            return 0.0
        s_w = q.scale.reshape(1, -1, 1, 1) if isinstance(self.layer, nn.Conv2d) else q.scale
        return error * s_a * s_w


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) with every BatchNorm that follows a convolution folded into it. Models
    without BatchNorm (transformers: LayerNorm/RMSNorm are not folded by any runtime) are copied as they are,
    since they need not be traceable by torch.fx."""
    from torch.fx.experimental.optimization import fuse

    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return copy.deepcopy(model).eval()
    return fuse(copy.deepcopy(model).eval())


def quantized_layers(model: nn.Module) -> list[QuantizedLayer]:
    return [m for m in model.modules() if isinstance(m, QuantizedLayer)]


def layers_named(model: nn.Module, patterns: list[str]) -> list[str]:
    """Full names of the modules each pattern names: the pattern as a whole name (fnmatch) or as its last
    dotted parts (``lm_head`` names ``lm.lm_head``), so a model preset need not know its wrapper's prefix.
    A pattern that names no module is a ValueError."""
    names = [name for name, _ in model.named_modules() if name]
    found: list[str] = []
    for pattern in patterns:
        hits = [n for n in names if fnmatch.fnmatch(n, pattern) or fnmatch.fnmatch(n, f"*.{pattern}")]
        if not hits:
            raise ValueError(f"model.keep_float: {pattern!r} names no layer of the model")
        found += [n for n in hits if n not in found]
    return found


def build_simulated_model(fp32_model: nn.Module, quant, emulate_isa: str | None = None,
                          layer_types: tuple[str, ...] = ("Conv2d", "Linear")) -> nn.Module:
    """Fold BN and wrap each Conv2d/Linear (not excluded; of ``layer_types``, the ones the cell's backend
    quantizes) per the scheme; weights are quantized at once, static activation ranges need :func:`calibrate`
    next. ``emulate_isa`` reproduces that CPU's int8 arithmetic (:mod:`qbench.quant.isa_emulation`)."""
    if quant.method == "none":
        raise ValueError("method none has no simulated model: use the FP32 model")
    model = fold_batchnorm(fp32_model)
    names = [name for name, _ in model.named_modules()]
    unmatched = [p for p in quant.exclude if not any(fnmatch.fnmatch(name, p) for name in names)]
    if unmatched:
        layers = [name for name, m in model.named_modules() if isinstance(m, QUANTIZABLE)]
        raise ValueError(f"quant.exclude {unmatched} match(es) no layer of the model (patterns match whole names, "
                         f"e.g. {', '.join(layers[:3])}{', ...' if len(layers) > 3 else ''})")
    per_layer = _layer_overrides(model, quant)
    targets = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, QUANTIZABLE) and type(module).__name__ in layer_types
        and not any(fnmatch.fnmatch(name, p) for p in quant.exclude) and not per_layer.get(name, {}).get("float")
    ]
    for name, module in targets:
        weights, activations = _layer_specs(quant, per_layer.get(name, {}))
        input_quantizer = None
        if quant.method in ("ptq", "qat"):
            input_quantizer = InputQuantizer(activations)
        elif quant.method == "dynamic":
            input_quantizer = InputQuantizer(activations, dynamic=True)
        layer = QuantizedLayer(module, name, weights, input_quantizer)
        layer.emulate_isa = emulate_isa
        layer.quantize_weight()
        model.set_submodule(name, layer)
    return model.eval()


def _layer_overrides(model: nn.Module, quant) -> dict[str, dict]:
    """``quant.layers`` resolved per quantizable layer name; a pattern that names none is a ValueError."""
    from qbench.config.layers import overrides, resolve

    patterns = overrides(quant)
    layers = [name for name, m in model.named_modules() if isinstance(m, QUANTIZABLE)]
    unmatched = [p for p in patterns if not any(fnmatch.fnmatch(name, p) for name in layers)]
    if unmatched:
        raise ValueError(f"quant.layers {unmatched} name(s) no Conv2d/Linear layer of the model (patterns match whole "
                         f"names, e.g. {', '.join(layers[:3])}{', ...' if len(layers) > 3 else ''})")
    return {name: resolve(name, patterns) for name in layers} if patterns else {}


def _layer_specs(quant, override: dict):
    """The (weights, activations) specs of one layer: the scheme's, with its ``quant.layers`` override applied."""
    weights, activations = quant.weights, quant.activations
    changes = {k: override[k] for k in ("bits", "granularity") if k in override}
    if changes:
        weights = dataclasses.replace(weights, **changes)
    if "activation_bits" in override:
        activations = dataclasses.replace(activations, bits=override["activation_bits"])
    return weights, activations


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Observe activations on the calibration batches, then freeze static ranges; returns samples seen."""
    quantizers = [
        layer.input_quantizer
        for layer in quantized_layers(model)
        if layer.input_quantizer is not None and not layer.input_quantizer.dynamic
    ]
    for q in quantizers:
        q.start_observing()
    seen = 0
    for x in batches:
        inputs = (x,) if isinstance(x, torch.Tensor) else tuple(x)  # several named inputs: positional
        model(*inputs)
        seen += len(inputs[0])
    for q in quantizers:
        q.freeze()
    return seen


def unwrap_simulated(model: nn.Module) -> nn.Module:
    """A plain float copy of a simulated model (each QuantizedLayer replaced by its inner layer, with its
    current, e.g. QAT-trained, weights): what exporters and integer runtimes take as input."""
    plain = copy.deepcopy(model)
    for layer in quantized_layers(plain):
        plain.set_submodule(layer.name, layer.layer)
    return plain.eval()


def snapped_float_model(model: nn.Module) -> nn.Module:
    """A plain float copy of a simulated model whose quantized layers hold their *dequantized codes* (codes x
    scale): a runtime that quantizes it again with the same scales and round-to-nearest gets back exactly the
    simulation's codes — also those AdaRound/QDrop rounded the other way, which re-rounding the float weight
    would lose. What ONNX Runtime's quantizer is given for cells whose algorithm chose the codes."""
    plain = copy.deepcopy(model)
    for layer in quantized_layers(plain):
        if layer.weight_q is not None:
            with torch.no_grad():
                layer.layer.weight.copy_(layer.weight_q.dequantize().to(layer.layer.weight.dtype))
        plain.set_submodule(layer.name, layer.layer)
    return plain.eval()


def weight_tensors(model: nn.Module) -> dict[str, QuantizedTensor]:
    """Quantized weight of every quantized layer, by layer name."""
    return {layer.name: layer.weight_q for layer in quantized_layers(model) if layer.weight_q is not None}
