"""Energy: measured where a counter exists (RAPL, NVML), otherwise estimated from CPU time — never both
in one figure — plus operation-count proxies (MACs, BOPs, a 45 nm energy model).

Metric names carry their source so a table column never mixes them:
``energy.rapl_mj_per_inference`` (Intel/AMD RAPL package counters: the whole socket, other processes
included), ``energy.nvml_mj_per_inference`` (GPU board energy), ``energy.estimate_mj_per_inference``
(this process's CPU seconds x ``measure.energy.cpu_watts_per_core``; an assumption, not a reading).

The energy model is Horowitz (ISSCC 2014, 45 nm): per MAC one multiply and one accumulate at the
precision of the layer's arithmetic, plus reading every weight bit once from DRAM (640 pJ per 32 bits).
It ranks schemes by the arithmetic and memory traffic they need; it is not a measurement of this machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from qbench.measure.opcount import LayerCount

POWERCAP = Path("/sys/class/powercap")


# ----------------------------------------------------------------------------------------- counters
class RaplReader:
    """Sum of the package-level RAPL domains (``intel-rapl:N``), in joules, wrap-around handled."""

    def __init__(self, root: Path = POWERCAP) -> None:
        self.domains = sorted(p for p in root.glob("intel-rapl:*") if p.name.count(":") == 1) if root.is_dir() else []
        self.domains = [d for d in self.domains if _readable(d / "energy_uj")]

    @property
    def available(self) -> bool:
        return bool(self.domains)

    def read_uj(self) -> list[int]:
        return [int((d / "energy_uj").read_text()) for d in self.domains]

    def joules_between(self, before: list[int], after: list[int]) -> float:
        total = 0
        for domain, a, b in zip(self.domains, before, after, strict=True):
            delta = b - a
            if delta < 0:  # the counter wrapped
                delta += int((domain / "max_energy_range_uj").read_text())
            total += delta
        return total / 1e6


def _readable(path: Path) -> bool:
    try:
        int(path.read_text())
        return True
    except (OSError, ValueError):
        return False


class NvmlReader:
    """Total energy of GPU ``index`` since driver load (Volta and newer), in joules."""

    def __init__(self, index: int = 0) -> None:
        self.handle: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            self.handle, self._nvml = handle, pynvml
        except Exception:  # no driver, no GPU, pynvml missing, or a GPU without the counter
            self.handle = None

    @property
    def available(self) -> bool:
        return self.handle is not None

    def read_mj(self) -> int:
        return int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))


@dataclass
class EnergyWindow:
    calls: int
    seconds: float
    cpu_seconds: float
    rapl_j: float | None
    nvml_j: float | None


class EnergyMeter:
    """Every available energy counter read around calls made by someone else (the latency window's), so the
    energy figure needs no window of its own: ``meter("start")``, the calls, ``meter("stop")``; the last pair
    counts. ``window(calls)`` is then what :func:`measure_window` would have measured over those calls."""

    def __init__(self, use_gpu: bool) -> None:
        self.rapl = RaplReader()
        self.nvml = NvmlReader() if use_gpu else None
        self.process = psutil.Process()
        self._start: tuple[float, float, float | None, float | None] | None = None
        self._span: tuple[float, float, float | None, float | None] | None = None

    def _read(self) -> tuple[float, float, float | None, float | None]:
        return (time.perf_counter(), sum(self.process.cpu_times()[:2]),
                self.rapl.read_uj() if self.rapl.available else None,
                self.nvml.read_mj() if self.nvml is not None and self.nvml.available else None)

    def __call__(self, event: str) -> None:
        if event == "start":
            self._start = self._read()
        elif self._start is not None:
            end = self._read()
            t0, cpu0, rapl0, nvml0 = self._start
            self._span = (end[0] - t0, end[1] - cpu0,
                          self.rapl.joules_between(rapl0, end[2]) if rapl0 is not None and end[2] is not None
                          else None,
                          (end[3] - nvml0) / 1e3 if nvml0 is not None and end[3] is not None else None)

    @property
    def seconds(self) -> float:
        return self._span[0] if self._span else 0.0

    def window(self, calls: int) -> EnergyWindow:
        assert self._span is not None, "the meter saw no window"
        seconds, cpu, rapl_j, nvml_j = self._span
        return EnergyWindow(calls, seconds, cpu, rapl_j, nvml_j)


def measure_window(fn: Callable[[], object], duration_s: float, use_gpu: bool,
                   sync: Callable[[], None] | None = None) -> EnergyWindow:
    """Call ``fn`` repeatedly for ``duration_s`` while reading every available energy counter."""
    rapl = RaplReader()
    nvml = NvmlReader() if use_gpu else None
    process = psutil.Process()
    cpu0 = sum(process.cpu_times()[:2])
    rapl0 = rapl.read_uj() if rapl.available else None
    nvml0 = nvml.read_mj() if nvml is not None and nvml.available else None
    start = time.perf_counter()
    calls = 0
    while calls < 3 or time.perf_counter() - start < duration_s:
        fn()
        if sync:
            sync()
        calls += 1
    seconds = time.perf_counter() - start
    cpu = sum(process.cpu_times()[:2]) - cpu0
    rapl_j = rapl.joules_between(rapl0, rapl.read_uj()) if rapl0 is not None else None
    nvml_j = (nvml.read_mj() - nvml0) / 1e3 if nvml0 is not None and nvml is not None else None
    return EnergyWindow(calls, seconds, cpu, rapl_j, nvml_j)


def window_metrics(window: EnergyWindow, cpu_watts_per_core: float) -> tuple[dict[str, float], dict[str, str]]:
    """Per-inference energy from a window: measured sources by name, else the CPU-time estimate."""
    metrics = {"energy.window_calls": float(window.calls), "energy.window_s": window.seconds,
               "energy.cpu_s_per_inference": window.cpu_seconds / window.calls}
    sources = []
    if window.rapl_j is not None:
        metrics["energy.rapl_mj_per_inference"] = 1e3 * window.rapl_j / window.calls
        sources.append("rapl")
    if window.nvml_j is not None:
        metrics["energy.nvml_mj_per_inference"] = 1e3 * window.nvml_j / window.calls
        sources.append("nvml")
    if not sources:
        metrics["energy.estimate_mj_per_inference"] = 1e3 * window.cpu_seconds * cpu_watts_per_core / window.calls
        sources.append("estimate")
    return metrics, {"energy.source": ",".join(sources), "energy.cpu_watts_per_core": f"{cpu_watts_per_core:g}"}


# ------------------------------------------------------------------------------------- the energy model
@dataclass(frozen=True)
class LayerPrecision:
    """Bits a layer computes with: weight bits, activation bits (32 = float) and whether the arithmetic
    is integer (both operands quantized) or float (weights dequantized on the fly, e.g. weight-only)."""

    weight_bits: int
    activation_bits: int
    integer: bool


def mac_energy_pj(precision: LayerPrecision, costs: Any) -> float:
    """Energy of one multiply-accumulate: 8-bit integer (<= 8 bits) or 32-bit integer multiply with an
    int32 accumulate, or fp32 multiply + add."""
    if not precision.integer:
        return costs.fp32_mult + costs.fp32_add
    if max(precision.weight_bits, precision.activation_bits) <= 8:
        return costs.int8_mult + costs.int32_add
    return costs.int32_mult + costs.int32_add


def proxies(layers: dict[str, LayerCount], precision: dict[str, LayerPrecision], costs: Any
            ) -> dict[str, float]:
    """MACs, BOPs (MACs x weight bits x activation bits) and the modelled energy per inference (pJ)."""
    fp32 = LayerPrecision(32, 32, False)
    macs = bops = compute_pj = weight_bits = 0.0
    for name, layer in layers.items():
        p = precision.get(name, fp32)
        macs += layer.macs
        bops += layer.macs * p.weight_bits * p.activation_bits
        compute_pj += layer.macs * mac_energy_pj(p, costs)
        weight_bits += layer.weight_numel * p.weight_bits
    dram_pj = weight_bits / 32 * costs.dram_32bit_read
    return {
        "opcount.macs": macs,
        "opcount.bops": bops,
        "energy.model_compute_uj": compute_pj / 1e6,
        "energy.model_weight_dram_uj": dram_pj / 1e6,
        "energy.model_total_uj": (compute_pj + dram_pj) / 1e6,
    }


def scheme_precision(quant: Any, quantized_layer_names: list[str]) -> dict[str, LayerPrecision]:
    """The precision of each quantized layer under ``quant`` (other layers are fp32), with its ``quant.layers``
    override's bits."""
    from qbench.config.layers import overrides, resolve

    if quant.method == "none":
        return {}
    patterns = overrides(quant)
    out = {}
    for name in quantized_layer_names:
        override = resolve(name, patterns)
        w = override.get("bits", quant.weights.bits)
        a = override.get("activation_bits", quant.activations.bits)
        out[name] = LayerPrecision(w, 32, False) if quant.method == "weight_only" else LayerPrecision(w, a, True)
    return out
