"""``torch_int8``: PyTorch's quantized CPU kernels (``backend.quantized_engine``: x86 = fbgemm + oneDNN per op,
fbgemm, onednn) reached through torch.ao FX, running qbench's own integer codes and scales (see ``deploy``),
and PyTorch's CPU int4 packed-weight matmul for 4-bit weight-only Linear layers (``int4``).
Capabilities here, torch-free: whether the engine is built into this PyTorch is only known in the worker,
whose deployment fails with the engines it has."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qbench.backends.base import ALL_LAYER_TYPES, TORCH_MODEL_NEEDED, Backend, cpu_runtime_reason
from qbench.config.layers import changes_grid

if TYPE_CHECKING:
    from qbench.config import QBenchConfig


# group sizes aten._weight_int4pack_mm_for_cpu takes (qbench.backends.torch_int8.int4)
INT4_GROUP_SIZES = (32, 64, 128, 256)


def weight_only_reason(bits: int, granularity: str, group_size: int) -> str | None:
    """Why PyTorch's CPU int4 weight-only kernel cannot run these weights, or None if it can."""
    if bits == 8:
        return ("8-bit weight-only: PyTorch's int8 CPU path for Linear is quant.method=dynamic "
                "(the weight-only kernel here is int4)")
    if bits != 4:
        return f"{bits}-bit weight-only: no such kernel in PyTorch's CPU backend (its weight-only kernel is int4)"
    if granularity != "per_group":
        return f"{granularity} 4-bit weights: PyTorch's CPU int4 kernel takes per-group scales"
    if group_size not in INT4_GROUP_SIZES:
        sizes = ", ".join(map(str, INT4_GROUP_SIZES))
        return f"group_size={group_size}: PyTorch's CPU int4 kernel takes groups of {sizes}"
    return None


class TorchInt8Backend(Backend):
    name = "torch_int8"

    def native_layer_types(self, cfg: QBenchConfig) -> tuple[str, ...]:
        # torch.ao's dynamic quantization and the int4 weight-only kernel cover Linear only: convolutions stay
        # float in the deployed model
        return ("Linear",) if cfg.quant.method in ("dynamic", "weight_only") else ALL_LAYER_TYPES

    def unsupported_reason(self, cfg: QBenchConfig) -> str | None:
        reason = cpu_runtime_reason(cfg, None, {"onnx": TORCH_MODEL_NEEDED},
                                    "PyTorch's quantized int8 kernels (fbgemm/oneDNN) run on the CPU only")
        q = cfg.quant
        w, a = q.weights, q.activations
        if reason or q.method == "none":
            return reason
        moved = changes_grid(q)
        if moved:
            return (f"quant.layers {'; '.join(moved)}: torch_int8 deploys one grid per scheme (layers can only be kept "
                    "float, float: true)")
        if cfg.model.source == "hf" and q.method in ("ptq", "qat"):
            return ("static int8 on torch_int8 goes through torch.fx, which cannot trace transformers models: "
                    "dynamic W8A8 (quant.method=dynamic) is its int8 path for them")
        if q.method == "weight_only":
            return weight_only_reason(w.bits, w.granularity, w.group_size)
        if q.algorithm in ("awq", "smoothquant"):
            return (f"quant.algorithm={q.algorithm}: the 1/s input scale it adds is deployed by the int4 weight-only "
                    "path only (torch.ao's static and dynamic modules take the weights alone)")
        if cfg.backend.int8_path == "u8u8":
            return "int8_path=u8u8: PyTorch's quantized kernels take s8 weights (u8u8 is an ONNX Runtime path)"
        if (w.bits != 8 or a.bits != 8) and not (q.method in ("ptq", "qat") and w.bits < 8 and a.bits == 8):
            return (f"W{w.bits}A{a.bits}: PyTorch's quantized CPU kernels are int8 x int8 (static W<8 A8 deploys "
                    "as int8 codes; W4A4 and dynamic W4A8 do not)")
        if w.granularity == "per_group":
            return "per-group weights: PyTorch's quantized Conv/Linear take per-tensor or per-channel scales"
        if not w.symmetric:
            return "asymmetric weights: qbench deploys symmetric int8 weights to fbgemm/oneDNN"
        if q.method in ("ptq", "qat"):
            if a.granularity != "per_tensor":
                return "per-channel activations: quantized tensors between ops carry one scale"
            if a.symmetric:
                return "symmetric (signed) activations: fbgemm/oneDNN take uint8 activations with a zero point"
        return None
