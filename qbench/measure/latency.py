"""Latency: warm-up, then per-call ``perf_counter_ns`` samples until a minimum count *and* duration; the adaptive
window (default) goes on from there until the stability gate is met, instead of retrying a fixed window.

Statistics follow pyperf/MLPerf practice: percentiles, mean/std/CV, and a bootstrap confidence interval
of the median (the figure qbench compares). A stability gate re-measures once when the figure is not
trustworthy and tags the result ``unstable`` if it stays so. What the gate looks at is configurable
(``measure.latency.stability_metric``):
- ``median_ci`` (default): relative half-width of the distribution-free 95 % confidence interval of the
  median (order statistics n/2 ± 0.98·sqrt(n)). It asks "is the p50 we compare pinned down?".
- ``cv`` (std/mean) and ``robust_cv`` (1.4826·MAD/median): the spread of single calls.
Why not CV by default: on this 2-core VM a 0.25 ms model has a broad but stationary call-time distribution
(p10 0.19 ms, p90 0.35 ms: thread wake-ups), so CV is 30-40 % and robust CV 26 % on every run, while the
median's 95 % CI is ±0.7 %. A CV gate would tag every small model ``unstable`` and retry for nothing.
All three figures are reported with every cell.

Summaries (bootstrap included) are computed after timing, outside the memory window of the worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class LatencyStats:
    """Summary of per-call latency samples (milliseconds)."""

    n: int
    robust_cv: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    cv: float
    ci95_low_ms: float
    ci95_high_ms: float
    samples_ms: np.ndarray = field(repr=False)
    attempts: int = 1
    unstable: bool = False

    def metrics(self, prefix: str = "latency") -> dict[str, float]:
        keys = ("n", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "cv", "robust_cv", "ci95_low_ms",
                "ci95_high_ms")
        out = {f"{prefix}.{k}": float(getattr(self, k)) for k in keys}
        out[f"{prefix}.attempts"] = float(self.attempts)
        return out


def bootstrap_median_ci(samples: np.ndarray, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
                        ) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the median (resampled in chunks to bound memory)."""
    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, 2_000_000 // max(1, len(samples))))
    medians = np.concatenate([
        np.median(samples[rng.integers(0, len(samples), size=(min(chunk, resamples - start), len(samples)))], axis=1)
        for start in range(0, resamples, chunk)
    ])
    alpha = (1 - confidence) / 2
    return float(np.quantile(medians, alpha)), float(np.quantile(medians, 1 - alpha))


def robust_cv(samples_ms: np.ndarray) -> float:
    """1.4826 x median absolute deviation / median: the CV of a normal distribution, robust to outliers."""
    median = float(np.median(samples_ms))
    return 1.4826 * float(np.median(np.abs(samples_ms - median))) / median if median > 0 else 0.0


def median_ci_halfwidth(samples_ms: np.ndarray, z: float = 1.96) -> float:
    """Relative half-width of the distribution-free CI of the median (binomial order statistics)."""
    s = np.sort(samples_ms)
    n = len(s)
    if n < 3:
        return float("inf")
    k = z * np.sqrt(n) / 2
    lo, hi = s[max(0, int(np.floor(n / 2 - k)))], s[min(n - 1, int(np.ceil(n / 2 + k)))]
    median = float(np.median(s))
    return float((hi - lo) / 2 / median) if median > 0 else 0.0


def spread(samples_ms: np.ndarray, metric: str) -> float:
    """The stability gate's figure for ``metric`` (median_ci, robust_cv or cv)."""
    if metric == "median_ci":
        return median_ci_halfwidth(samples_ms)
    if metric == "robust_cv":
        return robust_cv(samples_ms)
    mean = float(samples_ms.mean())
    return float(samples_ms.std(ddof=1) / mean) if mean > 0 and len(samples_ms) > 1 else 0.0


def summarize(samples_ms: np.ndarray, attempts: int = 1, unstable: bool = False) -> LatencyStats:
    s = np.asarray(samples_ms, dtype=np.float64)
    if s.size == 0:
        raise ValueError("no latency samples")
    mean = float(s.mean())
    std = float(s.std(ddof=1)) if s.size > 1 else 0.0
    low, high = bootstrap_median_ci(s) if s.size > 1 else (float(s[0]), float(s[0]))
    p50, p90, p99 = np.percentile(s, [50, 90, 99])
    return LatencyStats(
        n=int(s.size), robust_cv=robust_cv(s), attempts=attempts, unstable=unstable, p50_ms=float(p50),
        p90_ms=float(p90), p99_ms=float(p99), mean_ms=mean, std_ms=std,
        min_ms=float(s.min()), cv=std / mean if mean > 0 else 0.0, ci95_low_ms=low, ci95_high_ms=high,
        samples_ms=s,
    )


@dataclass
class TimedSamples:
    """Raw result of :func:`measure_latency` (summarize it outside the memory window)."""

    samples_ms: np.ndarray
    attempts: int
    unstable: bool
    gate_value: float
    stop: str = "min_reached"  # what ended the last window: min_reached | stable | max_duration

    def summary(self) -> LatencyStats:
        return summarize(self.samples_ms, self.attempts, self.unstable)


def wall_clock_call(fn: Callable[[], object], sync: Callable[[], None] | None = None) -> Callable[[], float]:
    """A timed call on the host clock (``perf_counter_ns``), synchronizing devices if ``sync`` is given."""
    clock = time.perf_counter_ns

    def timed() -> float:
        t0 = clock()
        fn()
        if sync:
            sync()
        return (clock() - t0) / 1e6

    return timed


def cuda_event_call(fn: Callable[[], object]) -> Callable[[], float]:
    """A timed call measured with CUDA events (device time of the work the call enqueued)."""
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def timed() -> float:
        start.record()
        fn()
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end))

    return timed


def time_calls(
    timed_call: Callable[[], float],
    *,
    warmup_calls: int,
    warmup_s: float,
    min_calls: int,
    min_duration_s: float,
    max_duration_s: float,
    stop_when_stable: Callable[[np.ndarray], bool] | None = None,
    on_window: Callable[[str], None] | None = None,
) -> tuple[np.ndarray, str]:
    """Per-call latencies in ms and what stopped the window. Warm-up until ``warmup_calls`` and ``warmup_s`` are
    both reached; then sample until ``min_calls`` and ``min_duration_s`` are both reached (``"min_reached"``), or
    ``max_duration_s`` runs out (``"max_duration"``). With ``stop_when_stable`` (the adaptive window) sampling
    goes on past the minimum until it says the samples are stable (``"stable"``), checked every tenth more calls.
    ``on_window("start" | "stop")`` is called around the measured calls (energy counters read the same calls)."""
    clock = time.perf_counter
    start = clock()
    calls = 0
    while calls < warmup_calls or (clock() - start) < warmup_s:
        timed_call()
        calls += 1
        if (clock() - start) > max_duration_s:
            break
    samples: list[float] = []
    if on_window:
        on_window("start")
    start = clock()
    stop = "min_reached"
    next_check = 0
    while True:
        samples.append(timed_call())
        n = len(samples)
        if (clock() - start) > max_duration_s and n >= 2:
            stop = "max_duration"
            break
        if n < min_calls or (clock() - start) < min_duration_s:
            continue
        if stop_when_stable is None:
            break
        if n >= next_check:
            if stop_when_stable(np.asarray(samples)):
                stop = "stable"
                break
            next_check = n + max(10, n // 10)
    if on_window:
        on_window("stop")
    return np.asarray(samples, dtype=np.float64), stop


def measure_latency(timed_call: Callable[[], float], cfg: Any,
                    on_window: Callable[[str], None] | None = None) -> TimedSamples:
    """Time ``timed_call`` with the protocol in ``cfg`` (measure.latency), applying the stability gate.

    ``cfg.window``: ``adaptive`` extends the window past its minimum until the gate's figure meets the
    threshold (or ``max_duration_s``): no retry needed; ``fixed`` stops at the minimum and retries the whole
    window up to ``retries`` times when the figure misses the threshold. Either way a window that ends above
    the threshold is tagged unstable."""
    metric = cfg.stability_metric
    adaptive = getattr(cfg, "window", "fixed") == "adaptive"

    def stable(samples: np.ndarray) -> bool:
        return spread(samples, metric) <= cfg.stability_threshold

    attempts = 0
    while True:
        attempts += 1
        samples, stop = time_calls(
            timed_call, warmup_calls=cfg.warmup_calls, warmup_s=cfg.warmup_s, min_calls=cfg.min_calls,
            min_duration_s=cfg.min_duration_s, max_duration_s=cfg.max_duration_s,
            stop_when_stable=stable if adaptive else None, on_window=on_window,
        )
        value = spread(samples, metric)
        if value <= cfg.stability_threshold:
            return TimedSamples(samples, attempts, False, value, stop)
        if adaptive or attempts > cfg.retries:
            return TimedSamples(samples, attempts, True, value, stop)
