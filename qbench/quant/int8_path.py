"""Which int8 arithmetic a real backend deploys, chosen from the CPU it runs on.

x86 int8 GEMM/convolution kernels multiply unsigned 8-bit activations by signed 8-bit weights (u8 x s8). With
VNNI (``avx512_vnni``, ``avx_vnni``) or AMX, four products are summed straight into int32 (``vpdpbusd``). Without
them (AVX2, AVX-512 without VNNI) the kernels use ``vpmaddubsw``, which adds *pairs* of adjacent products in a
saturating int16 before the int32 sum: 255 x 127 x 2 = 64770 > 32767, so full-range u8s8 models lose accuracy
there (resnet18 W8A8 lost 5 pt on an AVX2-only EPYC). ONNX Runtime's and PyTorch's own guidance for such CPUs is
to reduce the range (7 bits) or, for ONNX Runtime, to use u8 weights (u8u8, a kernel without the pair shortcut).

Paths (``backend.int8_path``):
- ``u8s8``: u8 activations, s8 weights in the full (narrow symmetric) range [-127, 127]. Exact with VNNI/AMX/ARM.
- ``u8s8_reduce_range``: weights quantized to 7 bits ([-63, 63]): 255 x 63 x 2 < 32767, so no pair can saturate
  on any ISA. This is ONNX Runtime's ``reduce_range`` (7-bit weights). PyTorch's fbgemm guidance reduces the
  *activations* instead; qbench reduces the weights on both runtimes because weight codes are fixed when the
  model is deployed, so "no saturation" is guaranteed, while a 7-bit activation range is exceeded (and clamped
  to 255 by the runtime) by any value beyond the calibrated range.
- ``u8u8``: ONNX Runtime only: the same weight grid stored as u8 with zero point 128; MLAS's u8u8 kernels widen
  to int16 before multiplying, so nothing saturates (slower than u8s8 on VNNI CPUs).
- ``auto``: ``u8s8`` where the CPU has VNNI/AMX or is not x86, ``u8s8_reduce_range`` on x86 without them.

The simulation applies the same grid (7-bit weights for reduce range), so simulated and deployed agree on every
CPU; ``quant.target_isa`` (see :mod:`qbench.quant.isa_emulation`) additionally reproduces the int16 pair
saturation of a non-VNNI CPU in the simulation, to predict what a ``u8s8`` model scores on a CPU you do not have.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from dataclasses import dataclass
from typing import Any

from qbench.config.names import INT8_PATHS, TARGET_ISAS

# backends whose int8 kernels the path applies to; the torch backend simulates the grid it is given
INT8_BACKENDS = ("onnxruntime", "torch_int8", "openvino")
# x86 ISAs without a u8 x s8 -> int32 dot product: pairs of products are summed in saturating int16
PAIR_SATURATING_ISAS = ("avx2", "avx512")
_VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
# fbgemm's own ISA override (FBGEMM_ENABLE_INSTRUCTIONS) -> the ISA its kernels then use
_FBGEMM_ISAS = {"AVX2": "avx2", "AVX512": "avx512", "AVX512_256": "avx512", "AVX512_E1": "vnni",
                "AVX512_E1_256": "vnni"}
# oneDNN's ISA cap (ONEDNN_MAX_CPU_ISA), which OpenVINO's CPU plugin honours (its primitive names show it:
# brgconv_avx2_I8) -> the int8 arithmetic class of the kernels it then picks; a cap never raises the host's class
ONEDNN_ISA_OVERRIDE = "ONEDNN_MAX_CPU_ISA"
_ONEDNN_ISAS = {"AVX2": "avx2", "AVX2_VNNI": "vnni", "AVX2_VNNI_2": "vnni", "AVX512_CORE": "avx512",
                "AVX512_CORE_VNNI": "vnni", "AVX512_CORE_BF16": "vnni", "AVX512_CORE_FP16": "vnni",
                "AVX512_CORE_AMX": "amx", "AVX512_CORE_AMX_FP16": "amx", "AVX10_1_512_AMX": "amx",
                "AVX10_1_512_AMX_FP16": "amx"}
_ISA_ORDER = ("other", "avx2", "avx512", "vnni", "amx")


def host_flags() -> set[str]:
    """The CPU flags of this machine (``/proc/cpuinfo``)."""
    from qbench.measure.env import cpu_flags

    return cpu_flags()


def int8_isa(flags: set[str] | None = None, machine: str | None = None) -> str:
    """The int8 arithmetic class of a CPU: ``amx``, ``vnni``, ``avx512``, ``avx2``, or ``other`` (non-x86 or
    pre-AVX2 x86, whose kernels do not take the u8 x s8 pair shortcut)."""
    flags = host_flags() if flags is None else flags
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64", "i686", "x86"):
        return "other"
    if "amx_int8" in flags:
        return "amx"
    if any(f in flags for f in _VNNI_FLAGS):
        return "vnni"
    if "avx512bw" in flags:
        return "avx512"
    return "avx2" if "avx2" in flags else "other"


def kernel_isa(backend: str, flags: set[str] | None = None) -> tuple[str, str]:
    """(ISA class the backend's int8 kernels use here, where that comes from). fbgemm honours its own
    ``FBGEMM_ENABLE_INSTRUCTIONS`` override, which the torch_int8 backend uses with ``quantized_engine=fbgemm``;
    OpenVINO's CPU plugin honours oneDNN's ``ONEDNN_MAX_CPU_ISA`` (e.g. ``AVX2`` on a VNNI host: the AVX2 int8
    kernels, which sum u8 x s8 pairs in int16 like an AVX2-only CPU's)."""
    override = os.environ.get("FBGEMM_ENABLE_INSTRUCTIONS", "").upper()
    if backend == "torch_int8" and override in _FBGEMM_ISAS:
        return _FBGEMM_ISAS[override], f"FBGEMM_ENABLE_INSTRUCTIONS={override}"
    host = int8_isa(flags)
    cap = os.environ.get(ONEDNN_ISA_OVERRIDE, "").upper()
    if backend == "openvino" and cap in _ONEDNN_ISAS and host in _ISA_ORDER:
        capped = min(host, _ONEDNN_ISAS[cap], key=_ISA_ORDER.index)
        return capped, f"{ONEDNN_ISA_OVERRIDE}={cap}"
    return host, "cpuinfo"


def saturates(isa: str) -> bool:
    return isa in PAIR_SATURATING_ISAS


@dataclass(frozen=True)
class Int8Path:
    """The int8 path a cell deploys and simulates, and why."""

    path: str  # u8s8 | u8s8_reduce_range | u8u8 | u7s8 | none (not an 8-bit integer scheme on an int8 backend)
    reason: str
    weight_bits: int = 8
    activation_bits: int = 8

    def tags(self) -> dict[str, str]:
        return {"int8.path": self.path, "int8.path_reason": self.reason}


def applies(backend: str, quant: Any) -> bool:
    """Whether the int8 path is relevant: an 8-bit weight x 8-bit activation integer scheme."""
    w, a = quant.weights, quant.activations
    return quant.method in ("ptq", "qat", "dynamic") and w.bits == 8 and a.bits == 8 and backend in (
        *INT8_BACKENDS, "torch")


def resolve(backend: str, quant: Any, requested: str, flags: set[str] | None = None) -> Int8Path:
    """The path for a cell: ``requested`` unless ``auto``, which follows the target ISA (``quant.target_isa``
    when it names one, else the ISA this backend's kernels use on this host)."""
    if not applies(backend, quant):
        return Int8Path("none", "not an 8-bit integer scheme on an int8 backend")
    if backend == "torch_int8" and quant.method == "dynamic":
        # torch.ao's dynamic Linear calls quantized::linear_dynamic with reduce_range=True on every CPU
        return Int8Path("u7s8", "PyTorch's dynamic Linear quantizes activations to 7 bits (reduce_range=True) "
                        "on every CPU", activation_bits=7)
    if requested != "auto":
        return Int8Path(requested, "requested (backend.int8_path)", 7 if requested == "u8s8_reduce_range" else 8)
    target = getattr(quant, "target_isa", "none")
    if backend == "torch" and target == "none":
        # the simulation-only backend has no kernels: it shows the scheme's own grid unless a target is named
        return Int8Path("u8s8", "auto: the torch backend simulates the full-range grid (no target ISA)")
    if target not in ("none", "host"):
        isa, source = target, "quant.target_isa"
    else:
        isa, source = kernel_isa(backend, flags)
    if saturates(isa):
        return Int8Path("u8s8_reduce_range", f"auto: {isa} ({source}) has no VNNI: u8 x s8 pairs would saturate "
                        "in int16, so weights use 7 bits (the runtimes' reduce_range guidance)", 7)
    return Int8Path("u8s8", f"auto: {isa} ({source}) sums u8 x s8 products in int32 (no saturation): full range")


def effective_quant(quant: Any, path: Int8Path) -> Any:
    """The scheme the simulation applies for ``path`` (7-bit weights for reduce range), as a copy."""
    if path.path == "none" or (path.weight_bits, path.activation_bits) == (8, 8):
        return quant
    weights = dataclasses.replace(quant.weights, bits=path.weight_bits)
    activations = dataclasses.replace(quant.activations, bits=path.activation_bits)
    # a quant.layers override that restates the scheme's bits is the scheme's grid: it follows the path too
    moved = {"bits": (quant.weights.bits, path.weight_bits),
             "activation_bits": (quant.activations.bits, path.activation_bits)}
    layers = {pattern: {k: moved[k][1] if k in moved and v == moved[k][0] else v for k, v in override.items()}
              for pattern, override in (getattr(quant, "layers", None) or {}).items()}
    return dataclasses.replace(quant, weights=weights, activations=activations, layers=layers)


__all__ = ["INT8_PATHS", "TARGET_ISAS", "Int8Path", "effective_quant", "emulated_isa", "for_cell", "resolve"]


def emulated_isa(quant: Any, path: Int8Path, backend: str, flags: set[str] | None = None) -> str | None:
    """The ISA whose u8 x s8 pair saturation the simulation reproduces, or None (exact int32 arithmetic).

    Only the full-range u8s8 path can saturate; ``quant.target_isa=host`` means the ISA this host's kernels use."""
    target = getattr(quant, "target_isa", "none")
    if path.path != "u8s8" or target == "none":
        return None
    isa = kernel_isa(backend, flags)[0] if target == "host" else target
    return isa if saturates(isa) else None


def for_cell(cfg: Any) -> tuple[Any, str | None, dict[str, str]]:
    """A cell's int8 arithmetic: its config with the scheme adjusted to the resolved path (names and hashes
    keep the original), the ISA the simulation reproduces (None: exact), and the tags that record both."""
    path = resolve(cfg.backend.name, cfg.quant, getattr(cfg.backend, "int8_path", "auto"))
    emulate = emulated_isa(cfg.quant, path, cfg.backend.name)
    tags: dict[str, str] = {}
    if path.path != "none":
        tags.update(path.tags())
        isa, source = kernel_isa(cfg.backend.name)
        tags["int8.kernel_isa"] = isa if source == "cpuinfo" else f"{isa} ({source})"
    if cfg.quant.target_isa != "none":
        tags["quant.target_isa"] = cfg.quant.target_isa
        tags["quant.emulated_isa"] = emulate or "exact"
    return dataclasses.replace(cfg, quant=effective_quant(cfg.quant, path)), emulate, tags
