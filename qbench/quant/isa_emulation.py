"""Reproduce a non-VNNI x86 CPU's int8 arithmetic in the simulation (``quant.target_isa=avx2|avx512``).

Without VNNI, x86 int8 kernels (fbgemm, oneDNN's fallbacks, ONNX Runtime's MLAS) compute a u8 x s8 dot product
with ``vpmaddubsw``: each *pair* of adjacent products ``a[2j] * w[2j] + a[2j+1] * w[2j+1]`` is summed in a
saturating int16 before ``vpmaddwd`` widens the pairs to int32. The reduction order of a convolution is
(kernel row, kernel column, input channel) with the channel innermost (NHWC im2col), a Linear layer's is its
input features in order; an odd reduction length is padded with a zero. Activations enter as their raw u8 codes
(zero point included: padding is the zero point), so the saturation depends on the zero point too. Checked
against fbgemm's AVX2 kernels (``FBGEMM_ENABLE_INSTRUCTIONS=AVX2``): tests/test_int8_path.py, and layer by layer
(3x3 and 1x1 convolutions, stride 1 and 2, depthwise, Linear) in 40 random cases each. One exception seen: fbgemm
routes 3x3 convolutions with 8 or 16 channels in and out (its groupwise fast path) to a kernel that does not
saturate, where this emulation does (it over-predicts the loss there).

The simulation computes each layer exactly (in float) and adds the integer error of the saturated pairs:
``y += s_a * s_w * sum_pairs(sat16(p) - p)``. A pair can only saturate when ``255 * (|w0| + |w1|) > 32767``,
so only those (output channel, pair) entries are evaluated — a few percent of a layer's pairs in practice.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INT16_MIN, INT16_MAX = -32768, 32767
U8_MAX = 255
# elements of one chunk of pair products (bounds the memory of a correction to ~256 MB of float32)
_CHUNK_ELEMENTS = 64 * 2**20


def reduction_matrix(layer: nn.Module, codes: torch.Tensor, zero_point: int) -> tuple[torch.Tensor, int]:
    """The input codes as ``[batch, groups, K, L]`` in the kernels' reduction order, and the group count.

    ``codes`` are the u8 activation codes (float tensor of integers) of the layer's input."""
    if isinstance(layer, nn.Linear):
        flat = codes.reshape(-1, codes.shape[-1])  # [N, K]
        return flat.T.unsqueeze(0).unsqueeze(0), 1  # batch 1, one group, K, L = N rows
    assert isinstance(layer, nn.Conv2d)
    if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
        raise NotImplementedError("ISA emulation supports zero padding with explicit sizes only")
    kh, kw = layer.kernel_size
    cols = F.unfold(codes - zero_point, layer.kernel_size, layer.dilation, layer.padding, layer.stride) + zero_point
    batch, _, positions = cols.shape
    groups = layer.groups
    per_group = layer.in_channels // groups
    cols = cols.reshape(batch, groups, per_group, kh * kw, positions).transpose(2, 3)
    return cols.reshape(batch, groups, kh * kw * per_group, positions), groups


def weight_matrix(layer: nn.Module, codes: torch.Tensor, groups: int) -> torch.Tensor:
    """Weight codes as ``[groups, out_per_group, K]`` in the same reduction order."""
    if isinstance(layer, nn.Linear):
        return codes.float().unsqueeze(0)
    out = codes.shape[0]
    w = codes.float().permute(0, 2, 3, 1)  # [O, kh, kw, C/g]: channel innermost
    return w.reshape(groups, out // groups, -1)


def saturation_error(layer: nn.Module, act_codes: torch.Tensor, zero_point: int, weight_codes: torch.Tensor
                     ) -> torch.Tensor | None:
    """Integer error ``sum(sat16(pair) - pair)`` per output element, shaped like the layer's output (in
    accumulator units: multiply by activation scale x weight scale), or None when no pair can saturate."""
    w = weight_matrix(layer, weight_codes, layer.groups if isinstance(layer, nn.Conv2d) else 1)
    groups, out_per_group, k = w.shape
    if k % 2:
        w = F.pad(w, (0, 1))
    w0, w1 = w[..., 0::2], w[..., 1::2]
    candidates = (U8_MAX * (w0.abs() + w1.abs()) > INT16_MAX).nonzero()  # [N, 3]: group, out, pair
    if len(candidates) == 0:
        return None
    a, _ = reduction_matrix(layer, act_codes, zero_point)
    if a.shape[2] % 2:
        a = F.pad(a, (0, 0, 0, 1))
    a0, a1 = a[:, :, 0::2], a[:, :, 1::2]  # [B, G, K/2, L]
    batch, positions = a.shape[0], a.shape[-1]
    error = torch.zeros(batch, groups * out_per_group, positions)
    g, o, p = candidates.unbind(1)
    step = max(1, _CHUNK_ELEMENTS // max(1, batch * positions))
    for start in range(0, len(candidates), step):
        sl = slice(start, start + step)
        gs, os_, ps = g[sl], o[sl], p[sl]
        pair = (a0[:, gs, ps] * w0[gs, os_, ps][None, :, None] + a1[:, gs, ps] * w1[gs, os_, ps][None, :, None])
        diff = pair.clamp(INT16_MIN, INT16_MAX) - pair  # zero unless saturated
        error.index_add_(1, gs * out_per_group + os_, diff)
    if isinstance(layer, nn.Linear):
        return error[0].T.reshape(*act_codes.shape[:-1], -1)
    out_h, out_w = _conv_output_hw(layer, act_codes.shape[-2:])
    return error.reshape(batch, -1, out_h, out_w)


def _conv_output_hw(layer: nn.Conv2d, hw: torch.Size) -> tuple[int, int]:
    sizes = []
    for i in range(2):
        span = layer.dilation[i] * (layer.kernel_size[i] - 1) + 1
        sizes.append((hw[i] + 2 * layer.padding[i] - span) // layer.stride[i] + 1)
    return sizes[0], sizes[1]
