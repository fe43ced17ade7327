"""The metric catalog: every figure qbench reports or gates, declared once with its unit, which direction is
better, how tables show it and what it means.

Names are the record's and MLflow's metric names (``acc.top1``), a contract: they never change. Figures
*derived* against the FP32 reference (``speedup``) are not stored in records; they are computed by
:func:`qbench.track.reference.relative_figures` wherever they are shown (a suite also logs two of them to its
cell runs as ``vs_fp32.*``, for MLflow's UI only: qbench never reads those back). The suite summary, ``qbench
compare`` and the HTML report take labels, scales and formats from here; ``qbench check`` takes the
direction (which change is a regression) and the unit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

HIGH, LOW = "high", "low"


@dataclass(frozen=True)
class Metric:
    """One figure. ``unit`` is the stored value's; tables show ``value * scale`` in ``shown_unit`` (default
    ``unit``) with ``fmt``, under ``label``."""

    name: str
    label: str
    help: str
    unit: str
    better: str | None = None  # HIGH | LOW | None (no direction)
    scale: float = 1.0
    shown_unit: str = ""
    fmt: str = ".4g"
    derived: bool = False  # relative to the FP32 reference; not in records or MLflow

    @property
    def shown(self) -> str:
        return self.shown_unit or self.unit

    @property
    def suffix(self) -> str:
        """What follows a shown value in a table cell (ratios: ``1.52x``); other units are in the label."""
        return "x" if self.shown == "x" else ""

    def show(self, value: float | None) -> str:
        """``value`` (stored unit) as a table shows it; ``—`` when missing."""
        if value is None or value != value:  # None or NaN
            return "—"
        return format(value * self.scale, self.fmt) + self.suffix

    def worse_by(self, old: float, new: float) -> float:
        """How much worse ``new`` is than ``old`` in the stored unit (negative: better); 0 without a direction."""
        if self.better == HIGH:
            return old - new
        if self.better == LOW:
            return new - old
        return 0.0


_ALL = (
    # accuracy (fractions in records and MLflow; percent or points in tables)
    Metric("acc.top1", "top-1 %", "top-1 accuracy on the evaluation split (acc.top1 x 100)", "fraction", HIGH,
           100, "%", ".2f"),
    Metric("acc.top5", "top-5 %", "top-5 accuracy on the evaluation split (acc.top5 x 100)", "fraction", HIGH,
           100, "%", ".2f"),
    Metric("acc.agreement_fp32", "agree %", "share of samples whose prediction equals FP32's "
           "(acc.agreement_fp32 x 100)", "fraction", HIGH, 100, "%", ".2f"),
    Metric("acc.gap_top1", "gap pt", "deployment gap: deployed minus simulated top-1, points (real backends only)",
           "fraction", HIGH, 100, "pt", "+.2f"),
    Metric("acc.agreement_simulated", "agree sim %", "share of samples whose deployed prediction equals the "
           "simulation's (acc.agreement_simulated x 100; real backends only)", "fraction", HIGH, 100, "%", ".2f"),
    # text tasks (qbench/tasks/language_modeling.py, embedding_similarity.py)
    Metric("lm.perplexity", "ppl", "perplexity on the evaluation windows (language_modeling)", "ppl", LOW,
           fmt=".3f"),
    Metric("lm.delta_perplexity_pct", "Δ ppl %", "perplexity relative to the same cell's FP32 model, percent",
           "%", LOW, fmt="+.2f"),
    Metric("lm.kl_to_fp32", "KL", "mean KL(FP32 || deployed) of the next-token distributions, nats", "nats", LOW,
           fmt=".4f"),
    Metric("lm.agreement", "agree tok %", "share of tokens whose next-token argmax equals FP32's (x 100)",
           "fraction", HIGH, 100, "%", ".2f"),
    Metric("sim.spearman", "ρ", "Spearman ρ of embedding cosine vs human scores, mean of the word sets", "rho",
           HIGH, fmt=".4f"),
    Metric("sim.delta_spearman", "Δ ρ", "ρ minus the same cell's FP32 ρ (mean of the word sets)", "rho", HIGH,
           fmt="+.4f"),
    Metric("sim.cosine_to_fp32_min", "cos min", "worst cosine between an embedding and its FP32 embedding", "cos",
           HIGH, fmt=".4f"),
    Metric("prefill_128.p50_ms", "prefill128 ms", "time to first token of a 128-token prompt (median)", "ms", LOW,
           fmt=".1f"),
    Metric("prefill_512.p50_ms", "prefill512 ms", "time to first token of a 512-token prompt (median)", "ms", LOW,
           fmt=".1f"),
    # latency and throughput
    Metric("latency.p50_ms", "p50 ms", "median batch-1 latency", "ms", LOW, fmt=".3f"),
    Metric("latency.p99_ms", "p99 ms", "99th percentile batch-1 latency", "ms", LOW, fmt=".3f"),
    # MLPerf load scenarios through LoadGen (qbench/measure/scenarios.py; measure.scenario)
    Metric("scenario.server.max_qps", "server QPS", "highest Poisson-arrival QPS whose p99 stays within "
           "measure.server.p99_ms (LoadGen Server)", "1/s", HIGH, fmt=".1f"),
    Metric("scenario.server.p99_ms", "server p99 ms", "p99 latency of the Server run at its max QPS", "ms", LOW,
           fmt=".2f"),
    Metric("scenario.offline.samples_per_s", "offline samples/s", "LoadGen Offline throughput", "1/s", HIGH,
           fmt=".0f"),
    Metric("scenario.single_stream.p90_ms", "SS p90 ms", "LoadGen SingleStream p90 latency", "ms", LOW, fmt=".3f"),
    Metric("scenario.multi_stream.p99_ms", "MS p99 ms", "LoadGen MultiStream p99 latency of a query",
           "ms", LOW, fmt=".2f"),
    Metric("speedup.paired", "paired", "median FP32/quantized ratio of interleaved blocks in the cell's worker "
           "(qbench/measure/paired.py)", "x", HIGH, fmt=".2f"),
    Metric("throughput.samples_per_s", "samples/s", "throughput at the throughput batch size", "1/s", HIGH,
           fmt=".0f"),
    # size and memory
    Metric("size.artifact_bytes", "size KiB", "deployed artifact on disk (size.artifact_bytes / 1024)", "B", LOW,
           1 / 1024, "KiB", ".1f"),
    Metric("size.packed_model_bytes", "packed KiB", "weights bit-packed at their width + fp32 scales "
           "(size.packed_model_bytes / 1024)", "B", LOW, 1 / 1024, "KiB", ".1f"),
    Metric("size.compression_ratio", "compr.", "FP32 weight bytes / packed bytes (size.compression_ratio)", "x",
           HIGH, fmt=".2f"),
    Metric("memory.peak_rss_inference_mb", "RSS MB", "peak RSS of the worker during inference "
           "(memory.peak_rss_inference_mb)", "MB", LOW, fmt=".0f"),
    Metric("memory.peak_rss_load_mb", "RSS load MB", "peak RSS while loading and quantizing", "MB", LOW, fmt=".0f"),
    # energy (one metric per source: measured and estimated figures never share a name)
    Metric("energy.rapl_mj_per_inference", "RAPL mJ", "measured, CPU package (energy.rapl_mj_per_inference)",
           "mJ", LOW, fmt=".3g"),
    Metric("energy.nvml_mj_per_inference", "NVML mJ", "measured, GPU board (energy.nvml_mj_per_inference)", "mJ",
           LOW, fmt=".3g"),
    Metric("energy.estimate_mj_per_inference", "est. mJ", "estimated from CPU time "
           "(energy.estimate_mj_per_inference)", "mJ", LOW, fmt=".3g"),
    # operation counts
    Metric("opcount.bops", "GBOPs", "bit operations per sample / 1e9 (MACs x weight bits x activation bits)",
           "count", LOW, 1e-9, "G", ".3g"),
    Metric("opcount.macs", "GMACs", "multiply-accumulates per sample / 1e9", "count", LOW, 1e-9, "G", ".3g"),
    # relative to the FP32 reference of the same suite run (qbench.track.reference)
    Metric("delta_top1_pt", "Δ FP32 pt", "top-1 minus the FP32 cell's top-1 (same model), percentage points", "pt",
           HIGH, fmt="+.2f", derived=True),
    Metric("acc_pct_fp32", "% of FP32", "the task metric as a percentage of the FP32 cell's, in its direction "
           "(top-1 / FP32 top-1; FP32 perplexity / perplexity)", "%", HIGH, fmt=".2f", derived=True),
    Metric("speedup", "speed-up", "FP32 time / time on the same backend: the paired speed-up where the cell "
           "measured one (interleaved with its FP32 reference, speedup.paired), else the unpaired one; none for "
           "simulated kernels (their latency is float latency)", "x", HIGH, fmt=".2f", derived=True),
    Metric("speedup_unpaired", "unpaired", "FP32 cell's p50 / this cell's p50, two worker processes of the same "
           "suite run", "x", HIGH, fmt=".2f", derived=True),
    Metric("size_ratio", "disk ratio", "FP32 cell's artifact bytes / this artifact's bytes", "x", HIGH, fmt=".2f",
           derived=True),
)
CATALOG: dict[str, Metric] = {m.name: m for m in _ALL}
ENERGY_SOURCES = ("nvml", "rapl", "estimate")  # measured first: the GPU board, the CPU package; else the estimate


def metric(name: str) -> Metric:
    """The catalog entry of ``name`` (KeyError for a name the catalog does not declare)."""
    return CATALOG[name]


def as_number(value: Any) -> float | None:
    """A figure as a finite float; None for a missing, non-numeric or non-finite value (NaN in a frame)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def task_result(metrics: Mapping[str, Any], tags: Mapping[str, Any]) -> str:
    """A cell's task metric and its change vs FP32 in the task's own terms, e.g. ``ppl 63.299 (Δ ppl % +97.38)``
    or ``ρ 0.5793 (Δ ρ -0.0083)``; "" for a cell without one (skipped, failed)."""
    name, delta_name = tags.get("task.metric"), tags.get("task.delta_metric")
    value = as_number(metrics.get(name)) if isinstance(name, str) and name else None
    if value is None:
        return ""
    m = CATALOG.get(name)
    text = f"{m.label} {m.show(value)}" if m else f"{name} {value:.4g}"
    delta = as_number(metrics.get(delta_name)) if isinstance(delta_name, str) and delta_name else None
    if delta is not None:
        d = CATALOG.get(delta_name)
        text += f" ({d.label} {d.show(delta)})" if d else f" (Δ {delta:+.4g})"
    return text


def energy_metric(source: str) -> str:
    """The metric name of energy per batch-1 inference from ``source`` (one of :data:`ENERGY_SOURCES`)."""
    return f"energy.{source}_mj_per_inference"


def paired_ci(metrics: Mapping[str, Any]) -> str:
    """``[low, high]`` of a cell's paired speed-up (95 % CI); "" where the cell measured none."""
    low, high = as_number(metrics.get("speedup.paired_ci95_low")), as_number(metrics.get("speedup.paired_ci95_high"))
    return f"[{low:.2f}, {high:.2f}]" if low is not None and high is not None else ""
