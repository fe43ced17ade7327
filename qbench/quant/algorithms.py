"""Weight-quantization algorithms beyond round-to-nearest, run on a simulated model (:mod:`qbench.quant.simulate`)
after its weights were RTN-quantized and before its activation quantizers are calibrated:

- ``gptq``        (Frantar et al. 2022): each column is rounded in turn and its error is spread over the
                  not-yet-rounded columns with the inverse input Hessian H = X^T X, in blocks.
- ``awq``         (Lin et al. 2023): input channels with large mean |x| are scaled up in the weight
                  (W * s, s = mean|x|^alpha, alpha grid-searched on sampled inputs) and the input down (x / s).
- ``smoothquant`` (Xiao et al. 2022): s = max|x|^alpha / max|W|^(1-alpha) moves activation outliers into
                  the weight, for static W8A8.

``cle``, ``adaround`` and ``qdrop`` (convolutional models: every quantized Conv2d/Linear, sequential passes) are
dispatched from here to :mod:`qbench.quant.cle` and :mod:`qbench.quant.adaround`; what follows is about the four
Linear algorithms.

Only QuantizedLayers wrapping an nn.Linear with a weight spec are changed; the grid (bits, granularity, group
size, symmetric, observer) is the layer's own, so the codes of ``weight_q`` are what an integer kernel runs.

Statistics come from ONE pass over the calibration batches with every layer computing in float
(``QuantizedLayer.float_forward``): each layer sees FP32 inputs, not the outputs of already-quantized earlier
layers as the papers' block-by-block (sequential) passes do. A sequential pass needs either graph knowledge
of the model (its transformer blocks) or one model pass per layer; one pass works for any model, costs one
forward pass over the calibration set (benchmarks/llm_algorithms.py measures what it recovers on SmolLM2-135M
W4-g128). Layers fed the same input tensor object (q/k/v, gate/up) share statistics.

GPTQ defaults to ``act_order`` (columns by decreasing H diagonal): on SmolLM2 without it GPTQ lowers every
layer's output error yet raises perplexity (v_proj above all: the rare attention-sink tokens' large input
channels collect the other columns' error); with it, it recovers 50-62 % of the RTN gap (16 / 8 evaluation
windows). AWQ also searches a clipping ratio per group on the smoothed weight (``clip``, as the reference
implementation does): without it AWQ recovers 33-39 %, with it 48-52 %.

AWQ and SmoothQuant keep 1/s as an explicit per-input-channel multiply (``QuantizedLayer.input_smoothing``,
applied before the input quantizer) instead of folding it into the preceding norm or linear layer as their
reference implementations do: that costs one elementwise op per layer but needs no graph surgery, so it works
for any model. The layer's float weight becomes W * s (the frame ``weight_q`` lives in); GPTQ leaves the
float weight as it is and only chooses different codes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from qbench.config.names import ALGORITHM_DEFAULTS, algorithm_options_error
from qbench.quant.affine import (
    QuantizedTensor,
    code_dtype,
    compute_qparams,
    dequantize,
    from_rows,
    qrange,
    quantize,
    quantize_tensor,
    to_rows,
)
from qbench.quant.observers import estimate_range
from qbench.quant.simulate import QuantizedLayer, quantized_layers

# options of each algorithm and their defaults (quant.algorithm_options)
DEFAULTS: dict[str, dict[str, Any]] = ALGORITHM_DEFAULTS
# the Linear / LLM-oriented algorithms of this module; cle, adaround and qdrop (convolutional models, every
# Conv2d/Linear) are in qbench/quant/cle.py and qbench/quant/adaround.py
LINEAR_ALGORITHMS = ("rtn", "gptq", "awq", "smoothquant")


def apply_algorithm(model: nn.Module, algorithm: str, options: Mapping[str, Any],
                    batches: Sequence[tuple[torch.Tensor, ...]]) -> dict[str, float]:
    """Run ``algorithm`` on every QuantizedLayer wrapping an nn.Linear in ``model`` (a simulated model), using
    the calibration ``batches`` (each a tuple of positional model inputs: ``model(*batch)``). Returns cost
    figures: ``quant.algorithm_s`` (seconds), ``quant.algorithm_samples`` (calibration samples used) and
    ``quant.algorithm_iterations`` (GPTQ: columns rounded; AWQ: candidate scalings tried; SmoothQuant: layers
    smoothed). rtn: no-op (returns {}).

    Options unknown to ``algorithm`` but known to another algorithm are ignored (one options dict can serve a
    sweep over algorithms); options no algorithm knows are an error."""
    message = algorithm_options_error(algorithm, options)
    if message:
        raise ValueError(message)
    if algorithm == "rtn":
        return {}
    opts = {key: options.get(key, default) for key, default in DEFAULTS[algorithm].items()}
    start = time.perf_counter()
    if algorithm not in LINEAR_ALGORITHMS:
        return {**_convolutional(model, algorithm, opts, batches), "quant.algorithm_s": time.perf_counter() - start,
                "quant.algorithm_samples": float(sum(len(batch[0]) for batch in batches))}
    layers = [layer for layer in quantized_layers(model)
              if layer.weight_spec is not None and isinstance(layer.layer, nn.Linear)]
    if any(layer.input_smoothing is not None for layer in layers):
        raise ValueError("apply_algorithm runs once, on a freshly built simulated model (inputs already smoothed)")
    stats, samples = collect_statistics(model, layers, batches, hessian=algorithm == "gptq",
                                        max_rows=int(opts["max_rows"]) if algorithm == "awq" else 0,
                                        seed=int(opts.get("seed", 0)))
    iterations = 0
    with torch.no_grad(), _single_thread():
        for layer in layers:
            st = stats.get(layer.name)
            if st is None or st.tokens == 0:
                continue  # not reached by the calibration batches: keeps its RTN weight
            if algorithm == "gptq":
                assert st.hessian is not None
                layer.set_weight_q(gptq_quantize(layer.layer.weight, st.hessian, layer.weight_spec,
                                                 float(opts["damp"]), int(opts["block_size"]),
                                                 bool(opts["act_order"])))
                iterations += layer.layer.in_features
            elif algorithm == "awq":
                mean_abs = (st.abs_sum / st.tokens).float()
                rows = torch.cat(st.rows)
                s = awq_scales(layer.layer.weight.detach().float(), mean_abs, rows, layer.weight_spec,
                               int(opts["grid"]))
                _smooth(layer, s)
                iterations += int(opts["grid"])
                if opts["clip"] and layer.weight_spec.granularity != "per_tensor":
                    layer.set_weight_q(awq_clip(layer.layer.weight.detach().float(), rows / s, layer.weight_spec))
                    iterations += len(CLIP_RATIOS)
            else:
                _smooth(layer, smoothquant_scales(layer.layer.weight.detach().float(), st.abs_max,
                                                  float(opts["alpha"])))
                iterations += 1
    return {"quant.algorithm_s": time.perf_counter() - start, "quant.algorithm_samples": float(samples),
            "quant.algorithm_iterations": float(iterations)}


def _convolutional(model: nn.Module, algorithm: str, opts: Mapping[str, Any],
                   batches: Sequence[tuple[torch.Tensor, ...]]) -> dict[str, float]:
    """cle / adaround / qdrop on every quantized Conv2d/Linear (their modules' docstrings say how)."""
    from qbench.quant.adaround import apply_adaround
    from qbench.quant.cle import apply_cle

    with _single_thread():  # bias correction's partial passes took 90 s instead of 3 s on two busy threads
        if algorithm == "cle":
            stats = apply_cle(model, batches, bias_correct=bool(opts["bias_correction"]), rounds=int(opts["rounds"]))
            return {**stats, "quant.algorithm_iterations": stats["quant.cle_rounds"]}
        stats = apply_cle(model, batches, bias_correct=False) if opts["cle"] else {}
        drop = float(opts["drop_prob"]) if algorithm == "qdrop" else 0.0
        return {**stats, **apply_adaround(model, batches, opts, drop)}


@contextmanager
def _single_thread() -> Iterator[None]:
    """One torch thread: the algorithms run many small ops, which with two threads on a busy shared machine
    wait on each other's descheduled thread (measured: GPTQ of one layer 0.34 s -> 4-14 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------- statistics
@dataclass
class LayerStats:
    """What the algorithms need of one layer's input X [tokens, in_features]."""

    tokens: int = 0
    hessian: torch.Tensor | None = None  # X^T X, float64
    abs_sum: torch.Tensor | None = None  # per input channel, float64
    abs_max: torch.Tensor | None = None
    rows: list[torch.Tensor] = field(default_factory=list)  # random input rows (AWQ's search)
    last_input: torch.Tensor | None = None  # the input last accumulated (layers sharing it count it once)

    def add(self, x: torch.Tensor, hessian: bool, n_rows: int, generator: torch.Generator) -> None:
        self.tokens += x.shape[0]
        if hessian:
            xtx = (x.T @ x).double()  # float32 product per batch, float64 sum over batches
            self.hessian = xtx if self.hessian is None else self.hessian.add_(xtx)
        a = x.abs()
        self.abs_sum = a.sum(0).double() + (0 if self.abs_sum is None else self.abs_sum)
        amax = a.amax(0)
        self.abs_max = amax if self.abs_max is None else torch.maximum(self.abs_max, amax)
        if n_rows:
            self.rows.append(x[torch.randperm(x.shape[0], generator=generator)[:n_rows]].clone())


@torch.no_grad()
def collect_statistics(model: nn.Module, layers: Sequence[QuantizedLayer],
                       batches: Sequence[tuple[torch.Tensor, ...]], *, hessian: bool, max_rows: int = 0,
                       seed: int = 0) -> tuple[dict[str, LayerStats], int]:
    """Input statistics of ``layers`` (by name) over one float pass of ``model`` on ``batches``; also returns
    the number of samples seen. At most ``max_rows`` input rows per layer are kept, spread over the batches."""
    generator = torch.Generator().manual_seed(seed)
    n_rows = math.ceil(max_rows / max(len(batches), 1)) if max_rows else 0
    stats: dict[str, LayerStats] = {}
    previous: list[tuple[torch.Tensor, LayerStats]] = []

    def hook(layer: QuantizedLayer, args: tuple[Any, ...]) -> None:
        x = args[0]
        st = stats.get(layer.name)
        if st is None:  # first call: share the previous layer's statistics when fed the very same tensor
            st = previous[0][1] if previous and previous[0][0] is x else LayerStats()
            stats[layer.name] = st
        if st.last_input is not x:
            st.last_input = x
            st.add(x.detach().reshape(-1, x.shape[-1]).float(), hessian, n_rows, generator)
        previous[:] = [(x, st)]

    handles = [layer.register_forward_pre_hook(hook) for layer in layers]
    all_layers = quantized_layers(model)
    for layer in all_layers:
        layer.float_forward = True
    samples = 0
    try:
        for batch in batches:
            model(*batch)
            samples += len(batch[0])
            previous.clear()
            for st in stats.values():
                st.last_input = None
    finally:
        for handle in handles:
            handle.remove()
        for layer in all_layers:
            layer.float_forward = False
    for st in stats.values():
        if st.rows:
            st.rows[:] = [torch.cat(st.rows)[:max_rows]]
    return stats, samples


# --------------------------------------------------------------------------------------------------- GPTQ
def _qparams(rows: torch.Tensor, spec) -> tuple[torch.Tensor, torch.Tensor]:
    return compute_qparams(*estimate_range(rows, spec), spec.bits, spec.symmetric)


def _inverse_hessian_cholesky(h: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp * mean(diag H) * I)^-1 (float32); the damping grows until H is PD."""
    for attempt in range(5):
        damped = h.clone()
        damped.diagonal().add_(damp * 10**attempt * float(h.diagonal().mean()))
        lower, info = torch.linalg.cholesky_ex(damped)
        if int(info) == 0:
            return torch.linalg.cholesky(torch.cholesky_inverse(lower), upper=True).float()
    raise RuntimeError("GPTQ: the Hessian stays singular after damping")


def gptq_quantize(weight: torch.Tensor, hessian: torch.Tensor, spec, damp: float = 0.01, block_size: int = 128,
                  act_order: bool = False) -> QuantizedTensor:
    """GPTQ codes of a Linear weight [out, in] on the spec's grid, given H = X^T X of its input [in, in].

    Per-group scales come from the error-updated weights when the column loop reaches the group's first column
    (as the reference implementation does); with ``act_order`` (columns by decreasing H diagonal) they are fixed
    up front from the original weight so that groups stay contiguous runs of columns ("static groups")."""
    w = weight.detach().float().clone()
    out_features, n = w.shape
    h = hessian.double().clone()
    dead = h.diagonal() == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    perm = torch.argsort(h.diagonal(), descending=True) if act_order else torch.arange(n)
    w, h = w[:, perm], h[perm][:, perm]
    hinv = _inverse_hessian_cholesky(h, damp)

    qmin, qmax = qrange(spec.bits, spec.symmetric)
    per_group = spec.granularity == "per_group"
    gs = spec.group_size if per_group else n
    groups = math.ceil(n / gs)
    if per_group:
        block_size = max(gs, block_size // gs * gs)  # each group lies within one block: its columns are current
        if act_order:
            scale, zp = _qparams(to_rows(weight.detach().float(), "per_group", gs), spec)
            scales, zps = scale.reshape(out_features, groups), zp.reshape(out_features, groups)
        else:
            scales = torch.empty(out_features, groups)
            zps = torch.empty(out_features, groups, dtype=torch.int32)
    else:
        scale, zp = _qparams(to_rows(weight.detach().float(), spec.granularity), spec)
        col_scale, col_zp = scale.expand(out_features), zp.expand(out_features)

    codes = torch.empty(out_features, n, dtype=torch.int32)
    for i1 in range(0, n, block_size):
        i2 = min(i1 + block_size, n)
        w1 = w[:, i1:i2].clone()
        err1 = torch.empty_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = int(perm[i1 + i])
            if per_group:
                g = col // gs
                if not act_order and col % gs == 0:
                    chunk = w1[:, i:i + gs]
                    chunk = F.pad(chunk, (0, gs - chunk.shape[1]))  # the zero padding of to_rows' last group
                    scales[:, g], zps[:, g] = _qparams(chunk, spec)
                col_scale, col_zp = scales[:, g], zps[:, g]
            q = quantize(w1[:, i], col_scale, col_zp, qmin, qmax)
            codes[:, i1 + i] = q
            e = (w1[:, i] - dequantize(q, col_scale, col_zp)) / hinv1[i, i]
            w1[:, i:] -= e.unsqueeze(1) * hinv1[i, i:].unsqueeze(0)
            err1[:, i] = e
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]

    codes = codes[:, torch.argsort(perm)].to(code_dtype(spec.bits, spec.symmetric))
    if per_group:
        scale, zp = scales.reshape(-1), zps.reshape(-1)
    return QuantizedTensor(codes, scale, zp, spec.bits, spec.symmetric, spec.granularity, weight.shape,
                           spec.group_size if per_group else 0)


# ------------------------------------------------------------------------------------- AWQ, SmoothQuant
def rtn_dequantized(w: torch.Tensor, spec) -> torch.Tensor:
    """Round-to-nearest quantize-dequantize of ``w`` on the spec's grid (what quantize_weight gives)."""
    rows = to_rows(w, spec.granularity, spec.group_size)
    scale, zp = _qparams(rows, spec)
    qmin, qmax = qrange(spec.bits, spec.symmetric)
    s, z = scale.unsqueeze(1), zp.unsqueeze(1).float()
    recon = (torch.clamp(torch.round(rows * (1.0 / s)) + z, qmin, qmax) - z) * s
    return from_rows(recon, w.shape, spec.granularity)


def awq_scales(w: torch.Tensor, mean_abs: torch.Tensor, rows: torch.Tensor, spec, grid: int = 20) -> torch.Tensor:
    """AWQ's per-input-channel scale s = mean|x|^alpha / sqrt(max * min), alpha in linspace(0, 1, grid)
    minimising ||Q(W diag(s)) (x / s) - W x||^2 on the sampled input ``rows``. alpha = 0 is plain RTN."""
    reference = rows @ w.T
    best_err, best = float("inf"), torch.ones_like(mean_abs)
    for alpha in torch.linspace(0.0, 1.0, grid).tolist():
        s = mean_abs.pow(alpha).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        err = float(((rows / s) @ rtn_dequantized(w * s, spec).T - reference).square().mean())
        if err < best_err:
            best_err, best = err, s
    return best


CLIP_RATIOS = torch.linspace(1.0, 0.5, 11).tolist()


def awq_clip(w: torch.Tensor, rows: torch.Tensor, spec) -> QuantizedTensor:
    """AWQ's clipping search: each row of the weight's row view (group or channel) keeps the range ratio in
    CLIP_RATIOS with the lowest output error ||(W_g - Q(W_g)) x_g||^2 on the input ``rows``."""
    view = to_rows(w, spec.granularity, spec.group_size)
    size = view.shape[1]
    groups = view.shape[0] // w.shape[0]
    x = F.pad(rows, (0, groups * size - rows.shape[1])).reshape(-1, groups, size).transpose(0, 1)
    gram = x.transpose(1, 2) @ x  # per group: X_g^T X_g [groups, size, size]
    lo0, hi0 = estimate_range(view, spec)
    qmin, qmax = qrange(spec.bits, spec.symmetric)
    best_err = torch.full_like(lo0, float("inf"))
    best_ratio = torch.ones_like(lo0)
    for ratio in CLIP_RATIOS:
        scale, zp = compute_qparams(lo0 * ratio, hi0 * ratio, spec.bits, spec.symmetric)
        s, z = scale.unsqueeze(1), zp.unsqueeze(1).float()
        delta = view - (torch.clamp(torch.round(view * (1.0 / s)) + z, qmin, qmax) - z) * s
        delta = delta.reshape(w.shape[0], groups, size).transpose(0, 1)  # [groups, out, size]
        err = ((delta @ gram) * delta).sum(2).transpose(0, 1).reshape(-1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_ratio = torch.where(better, torch.full_like(best_ratio, ratio), best_ratio)
    return quantize_tensor(w, lo0 * best_ratio, hi0 * best_ratio, spec.bits, spec.symmetric, spec.granularity,
                           spec.group_size)


def smoothquant_scales(w: torch.Tensor, abs_max: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """SmoothQuant's s_j = max|X_j|^alpha / max|W_:j|^(1 - alpha)."""
    w_max = w.abs().amax(0).clamp(min=1e-5)
    return (abs_max.float().clamp(min=1e-5).pow(alpha) / w_max.pow(1.0 - alpha)).clamp(min=1e-5)


def _smooth(layer: QuantizedLayer, s: torch.Tensor) -> None:
    """Weight W -> W * s (re-quantized RTN), input x -> x / s at run time."""
    layer.layer.weight.mul_(s.to(layer.layer.weight.dtype))
    layer.input_smoothing = (1.0 / s).to(layer.layer.weight.dtype)
    layer.quantize_weight()
