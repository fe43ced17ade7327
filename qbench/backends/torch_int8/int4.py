"""4-bit weight-only Linear on PyTorch's CPU int4 packed-weight matmul (``aten._weight_int4pack_mm_for_cpu``).

The kernel keeps the weight as packed unsigned 4-bit codes (two per byte, ``aten._convert_weight_to_int4pack_for_cpu``)
and unpacks/scales them inside the matmul, group by group along the input dimension; activations stay float.
Its constraints (torch 2.14, checked in tests/test_int4_kernel.py):

- activations 2-D, contiguous, float32, bfloat16 or float16; scales and zeros of the same dtype. Only bfloat16
  runs vectorized code: at batch 1 on a 576x1536 layer it takes ~45 us where float32 takes ~1300 us and float16
  ~2100 us (fp32 ``F.linear``: ~130 us; benchmarks/int4_linear.py). So :data:`DEFAULT_COMPUTE_DTYPE` is
  bfloat16: the module converts its input to bfloat16 at its boundary and its output back to the input's dtype,
  and holds scales and zeros in bfloat16 (the integer codes are unchanged; tag ``int4.activation_dtype``). The
  cost, ~0.3 % of a layer's output magnitude against the float32 simulation, is in the deployment gap;
- group size 32, 64, 128 or 256, and the input dimension K a multiple of it; out_features a multiple of 16;
- per (out channel, group): ``w = (u - 8) * scale + zero`` with u in [0, 15] and ``zero`` a float offset.

qbench's own codes map onto that grid: symmetric codes c in [-7, 7] become u = c + 8 with zero = 0 (exact:
``(u - 8) * scale == c * scale``); asymmetric codes c in [0, 15] with zero point zp stay u = c with
zero = (8 - zp) * scale (one float32 rounding away from ``(c - zp) * scale``). Layers whose K is not a multiple of
the group size (qbench pads its last group) get their input zero-padded to whole groups, and out_features is padded
to a multiple of 16 with zero rows that are sliced off: both exact.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from qbench.backends.torch_int8 import INT4_GROUP_SIZES, weight_only_reason

if TYPE_CHECKING:
    from qbench.quant.affine import QuantizedTensor
    from qbench.quant.simulate import QuantizedLayer

# the kernel's fixed offset: w = (u - 8) * scale + zero
KERNEL_OFFSET = 8
N_MULTIPLE = 16
# the dtype of the kernel's activations, scales and zeros: bfloat16 is its only vectorized path (module docstring)
DEFAULT_COMPUTE_DTYPE = torch.bfloat16


def kernel_grid(q: QuantizedTensor) -> tuple[torch.Tensor, torch.Tensor]:
    """qbench's 4-bit per-group codes of a (N, K) weight as the kernel's unsigned codes, (N, groups * group_size)
    int32 (the padded tail holds the zero point's code), and its scales-and-zeros, (groups, N, 2) float32."""
    if q.bits != 4 or q.granularity != "per_group" or len(q.shape) != 2:
        raise ValueError(f"int4 kernel: needs 4-bit per-group 2-D weights, got {q.bits}-bit {q.granularity} "
                         f"{tuple(q.shape)}")
    n, k = q.shape
    g = q.group_size
    groups = math.ceil(k / g)
    offset = KERNEL_OFFSET if q.symmetric else 0  # signed [-7, 7] -> unsigned [1, 15]
    scale = q.scale.float().reshape(n, groups)
    zp_code = q.zero_point.to(torch.int32).reshape(n, groups) + offset  # the code of the value 0.0
    u = zp_code.repeat_interleave(g, dim=1)
    u[:, :k] = q.codes.to(torch.int32) + offset
    if int(u.min()) < 0 or int(u.max()) > 15:
        raise ValueError("int4 kernel: codes outside the 4-bit range")
    zero = (KERNEL_OFFSET - zp_code).float() * scale
    return u, torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous()


class Int4WeightOnlyLinear(nn.Module):
    """A Linear whose weight is qbench's 4-bit per-group codes, packed for PyTorch's CPU int4 kernel
    (``aten._weight_int4pack_mm_for_cpu``); inputs are converted to ``compute_dtype`` (bfloat16 by default, the
    kernel's fast path) at the module boundary and outputs back to the input's dtype. See the module docstring."""

    # how qbench.measure.opmix counts this module: an integer-weight (int4) kernel, like ORT's MatMulNBits
    opmix_label = "int4pack.Linear"

    def __init__(self, in_features: int, out_features: int, group_size: int, packed: torch.Tensor,
                 scales_and_zeros: torch.Tensor, bias: torch.Tensor | None,
                 compute_dtype: torch.dtype = DEFAULT_COMPUTE_DTYPE) -> None:
        super().__init__()
        if group_size not in INT4_GROUP_SIZES:
            raise ValueError(f"int4 kernel: group_size {group_size} not in {INT4_GROUP_SIZES}")
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        self.compute_dtype = compute_dtype
        self.k_pad = scales_and_zeros.shape[0] * group_size - in_features
        self.n_pad = packed.shape[0] - out_features
        self.register_buffer("packed", packed)
        self.register_buffer("scales_and_zeros", scales_and_zeros.to(compute_dtype))
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        # AWQ's per-input-channel 1/s (qbench/quant/algorithms.py): the codes are of W * s, so the input is scaled
        self.register_buffer("input_smoothing", None)

    @classmethod
    def from_quantized(cls, layer: QuantizedLayer, compute_dtype: torch.dtype = DEFAULT_COMPUTE_DTYPE
                       ) -> Int4WeightOnlyLinear:
        """The deployed form of a simulated Linear: its integer codes, scales and zero points, and its bias."""
        q = layer.weight_q
        if not isinstance(layer.layer, nn.Linear) or q is None:
            raise ValueError(f"{layer.name}: the int4 kernel takes a quantized Linear")
        reason = weight_only_reason(q.bits, q.granularity, q.group_size)
        if reason:
            raise ValueError(f"{layer.name}: {reason}")
        u, sz = kernel_grid(q)
        n = q.shape[0]
        n_pad = -n % N_MULTIPLE
        if n_pad:  # zero rows: scale 0, zero 0
            u = torch.cat([u, u.new_full((n_pad, u.shape[1]), KERNEL_OFFSET)])
            sz = torch.cat([sz, sz.new_zeros(sz.shape[0], n_pad, 2)], dim=1)
        packed = torch._convert_weight_to_int4pack_for_cpu(u.contiguous(), 1)
        module = cls(q.shape[1], n, q.group_size, packed, sz, layer.layer.bias, compute_dtype)
        if getattr(layer, "input_smoothing", None) is not None:
            module.input_smoothing = layer.input_smoothing.detach().float().clone()
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        if self.input_smoothing is not None:
            x = x * self.input_smoothing
        a = x.reshape(-1, self.in_features).to(self.compute_dtype)
        if self.k_pad:
            a = F.pad(a, (0, self.k_pad))
        y = torch._weight_int4pack_mm_for_cpu(a.contiguous(), self.packed, self.group_size, self.scales_and_zeros)
        if self.n_pad:
            y = y[:, :self.out_features]
        y = y.float()
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype).reshape(*lead, self.out_features)

    def packed_nbytes(self) -> int:
        """Bytes the kernel reads for the weight: packed 4-bit codes plus its scales and zeros."""
        return (self.packed.numel() * self.packed.element_size()
                + self.scales_and_zeros.numel() * self.scales_and_zeros.element_size())

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}, "
                f"compute_dtype={self.compute_dtype}, bias={self.bias is not None}")
