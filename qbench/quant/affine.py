"""Affine (uniform) quantization: integer ranges, scale/zero-point, quantize, dequantize, fake-quantize.

Conventions (the ones ONNX Runtime and TensorRT use, so simulated and deployed models agree):
- symmetric  -> signed codes in the *narrow* range [-(2^(b-1) - 1), 2^(b-1) - 1], zero point 0;
- asymmetric -> unsigned codes in [0, 2^b - 1], the float range is widened to include 0 so that 0 is
  exactly representable (zero padding, ReLU outputs).
Rounding is round-half-to-even of ``x * (1 / scale)``, exactly as torch's fake-quant kernels do.

Tensors are quantized through a 2-D *row view* (rows x elements): one row for per-tensor, one row per
output channel for per-channel, one row per (channel, group) for per-group. Each row has its own scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def qrange(bits: int, symmetric: bool) -> tuple[int, int]:
    """Integer code range for a bit-width."""
    if symmetric:
        limit = 2 ** (bits - 1) - 1
        return -limit, limit
    return 0, 2**bits - 1


def code_dtype(bits: int, symmetric: bool) -> torch.dtype:
    """Smallest torch integer dtype that holds the codes (int4 codes live in int8 containers)."""
    if bits <= 8:
        return torch.int8 if symmetric else torch.uint8
    return torch.int16 if bits <= 15 or symmetric else torch.int32


def compute_qparams(
    min_val: torch.Tensor, max_val: torch.Tensor, bits: int, symmetric: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale (float32) and zero point (int32) that map [min_val, max_val] onto the code range."""
    qmin, qmax = qrange(bits, symmetric)
    min_val = min_val.float()
    max_val = max_val.float()
    eps = torch.finfo(torch.float32).eps
    if symmetric:
        amax = torch.maximum(min_val.abs(), max_val.abs())
        scale = torch.clamp(amax / qmax, min=eps)
        zero_point = torch.zeros_like(scale, dtype=torch.int32)
    else:
        lo = torch.clamp(min_val, max=0.0)
        hi = torch.clamp(max_val, min=0.0)
        scale = torch.clamp((hi - lo) / (qmax - qmin), min=eps)
        zero_point = torch.clamp(qmin - torch.round(lo / scale), qmin, qmax).to(torch.int32)
    return scale, zero_point


def quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """Integer codes (as int32) of ``x``; scale/zero_point broadcast against x."""
    inv_scale = 1.0 / scale
    return torch.clamp(torch.round(x * inv_scale) + zero_point, qmin, qmax).to(torch.int32)


def dequantize(codes: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    return (codes.to(torch.float32) - zero_point.to(torch.float32)) * scale


class _RoundSTE(torch.autograd.Function):
    """Round in the forward pass, identity gradient in the backward pass (straight-through estimator)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


def fake_quantize(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int
) -> torch.Tensor:
    """quantize -> dequantize, differentiable: STE through rounding, zero gradient outside the range
    for x, and gradients to ``scale`` when it requires grad (LSQ)."""
    zp = zero_point.to(x.dtype)
    q = torch.clamp(_RoundSTE.apply(x * (1.0 / scale)) + zp, qmin, qmax)
    return (q - zp) * scale


# ------------------------------------------------------------------------------------------- row views
def to_rows(w: torch.Tensor, granularity: str, group_size: int = 0, axis: int = 0) -> torch.Tensor:
    """2-D view (rows x elements) of ``w`` for the granularity; per_group pads the last group with zeros."""
    if granularity == "per_tensor":
        return w.reshape(1, -1)
    channels_first = w.movedim(axis, 0) if axis else w
    rows = channels_first.reshape(channels_first.shape[0], -1)
    if granularity == "per_channel":
        return rows
    if granularity != "per_group":
        raise ValueError(f"granularity {granularity!r}: valid values: per_tensor, per_channel, per_group")
    k = rows.shape[1]
    groups = math.ceil(k / group_size)
    pad = groups * group_size - k
    if pad:
        rows = torch.nn.functional.pad(rows, (0, pad))
    return rows.reshape(rows.shape[0] * groups, group_size)


def from_rows(rows: torch.Tensor, shape: torch.Size, granularity: str, axis: int = 0) -> torch.Tensor:
    """Inverse of :func:`to_rows` (drops per-group padding)."""
    if granularity == "per_tensor":
        return rows.reshape(shape)
    moved_shape = list(shape)
    if axis:
        moved_shape.insert(0, moved_shape.pop(axis))
    channels = moved_shape[0]
    k = math.prod(moved_shape[1:])
    flat = rows.reshape(channels, -1)[:, :k]
    out = flat.reshape(moved_shape)
    return out.movedim(0, axis) if axis else out


@dataclass
class QuantizedTensor:
    """What an integer kernel sees: integer codes plus per-row scale and zero point.

    ``scale``/``zero_point`` have one entry per row of the granularity's row view: shape (1,) per tensor,
    (C,) per channel, (C * groups,) per group (groups along the flattened input dimension).
    """

    codes: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor
    bits: int
    symmetric: bool
    granularity: str
    shape: torch.Size
    group_size: int = 0
    axis: int = 0
    # bits each code occupies when deployed, when wider than ``bits`` (7-bit reduce-range codes in int8)
    storage_bits: int | None = None

    @property
    def stored_bits(self) -> int:
        return self.storage_bits or self.bits

    def dequantize(self) -> torch.Tensor:
        rows = to_rows(self.codes, self.granularity, self.group_size, self.axis)
        values = dequantize(rows, self.scale.unsqueeze(1), self.zero_point.unsqueeze(1))
        return from_rows(values, self.shape, self.granularity, self.axis)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def packed_nbytes(self) -> int:
        """Bytes when codes are bit-packed at their width, plus fp32 scales and (asymmetric) packed zero points."""
        n_params = self.scale.numel()
        zp_bits = 0 if self.symmetric else self.stored_bits * n_params
        return math.ceil((self.numel * self.stored_bits + zp_bits) / 8) + 4 * n_params


def quantize_tensor(
    w: torch.Tensor,
    min_val: torch.Tensor,
    max_val: torch.Tensor,
    bits: int,
    symmetric: bool,
    granularity: str,
    group_size: int = 0,
    axis: int = 0,
) -> QuantizedTensor:
    """Quantize ``w`` with per-row ranges ``min_val``/``max_val`` (from an observer on the same row view)."""
    scale, zero_point = compute_qparams(min_val, max_val, bits, symmetric)
    qmin, qmax = qrange(bits, symmetric)
    rows = to_rows(w.detach().float(), granularity, group_size, axis)
    codes_rows = quantize(rows, scale.unsqueeze(1), zero_point.unsqueeze(1), qmin, qmax)
    codes = from_rows(codes_rows, w.shape, granularity, axis).to(code_dtype(bits, symmetric))
    return QuantizedTensor(codes, scale, zero_point, bits, symmetric, granularity, w.shape, group_size, axis)
