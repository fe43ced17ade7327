"""Paired speed-up: a quantized model timed interleaved with its FP32 reference in one process.

The ratio of two p50s measured in different worker processes minutes apart is mostly host drift on a shared
machine (measured on a 2-core EPYC VM: FP32 alone moved between 1.47 and 2.32 ms within one minute). Interleaving
cancels drift that is slower than a block: calls run in blocks of about ``block_ms`` each, FP32 and quantized in
turn (ABBA order: A B, then B A, ... so a trend within a pair favours neither), and each pair of adjacent blocks
gives one ratio, FP32 median / quantized median. The paired speed-up is the median over ABBA units (below).

Blocks are sized by time, not by a call count, and each block's figure is the median of its second half only:
each switch between the two models costs the next block its first calls (the other session's thread pool still
spinning on the 2 cores, caches refilled with the other model's weights). Measured on resnet18 ONNX Runtime
sessions (2-core Xeon, quiet, benchmarks/paired_drift.py): FP32's first call after a switch took 23-29x its
settled time, its calls 11-20 still +12 %; int8's first 6.6-6.9x, calls 11-20 +0.5-1 %. Counting whole blocks,
the pairs where FP32 ran second read a 4.5 % higher ratio than those where it ran first (1.021 vs 1.067), so
per-pair ratios came in two clusters and their median fell somewhere in the gap; second halves: 1.040 vs 1.041.
Each ABBA unit (an A B pair and the B A pair after it) gives one log-ratio, the mean of its two pairs', which
cancels what is left: each model runs once first and once second in a unit. Each side's block size comes from
its own run of warm-up calls (alternating warm-up calls are all first calls after a switch: blocks of 40-57 ms).

Its confidence interval has to hold across windows, not only within one: the ratio itself drifts over seconds
to minutes on a shared host (resnet18 on ONNX Runtime, 2-core Xeon, quiet, one process: medians of 50 units,
~20 s each, ranged 0.99-1.07 within 3 minutes; 8-unit windows spread with an SD 2-3x the standard error that a
bootstrap inside each window gives). Measured on two 800-block series (benchmarks/paired_drift.py), against the
same estimate from a window ~2 s later (a correct 95 % CI covers such a repeat ~83 % of the time: both carry the
same noise): a moving-block bootstrap over units (Kuensch 1989) covered it 48-57 % of the time, batch means on
medians (4 contiguous batches, t with 3 degrees of freedom; Schmeiser 1982) 67-84 %, at about twice the width.
qbench reports the batch-means CI (``speedup.paired_ci95_*``) and keeps the moving-block one as the window's own
precision (``speedup.paired_window_ci95_*``): the stopping rule reads the latter, since more blocks in the same
window hardly narrow what drift adds (the batch-means half-width fell only from 0.037-0.040 to 0.034 between 8
and 20 units). The median and its intervals, not a Hodges-Lehmann estimate: they are what the rest of qbench reports
(the p50 and its CI), so the figures read alike.

The window stops as the latency window does: after ``min_blocks`` once the window CI's relative half-width is
within ``measure.latency.stability_threshold``, else at ``max_blocks`` or ``max_duration_s``; what stopped it is
recorded (``speedup.paired_stop``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.stats

# batches of the reported CI (batch_medians_ci): 4 keeps 2 units (4 blocks) per batch at the 16-block minimum
BATCHES = 4


@dataclass
class PairedResult:
    """Per-block medians (ms) of the reference (FP32) and the candidate (quantized) and why the window stopped."""

    reference_ms: np.ndarray
    candidate_ms: np.ndarray
    stop: str
    seconds: float
    reference_block_calls: int
    candidate_block_calls: int

    @property
    def log_ratios(self) -> np.ndarray:
        """One log-ratio (FP32 / quantized) per pair of blocks."""
        return np.log(self.reference_ms / self.candidate_ms)

    @property
    def unit_log_ratios(self) -> np.ndarray:
        """One log-ratio per ABBA unit (two adjacent pairs, each model once first and once second); a window cut
        short before its first whole unit falls back to the pairs."""
        logs = self.log_ratios
        whole = len(logs) // 2 * 2
        return (logs[0:whole:2] + logs[1:whole:2]) / 2 if whole else logs

    def interval(self) -> tuple[float, float, float]:
        """Paired speed-up (median of per-unit ratios) and its 95 % CI from batch medians (what it reports)."""
        return self._with_ci(batch_medians_ci)

    def window_interval(self) -> tuple[float, float, float]:
        """The same estimate with the window's own moving-block bootstrap CI (what the stopping rule reads)."""
        return self._with_ci(block_bootstrap_median_ci)

    def _with_ci(self, ci: Callable[[np.ndarray], tuple[float, float]]) -> tuple[float, float, float]:
        logs = self.unit_log_ratios
        low, high = ci(logs) if len(logs) > 1 else (logs[0], logs[0])
        return math.exp(float(np.median(logs))), math.exp(low), math.exp(high)

    def metrics(self) -> dict[str, float]:
        estimate, low, high = self.interval()
        _, window_low, window_high = self.window_interval()
        return {"speedup.paired": estimate, "speedup.paired_ci95_low": low, "speedup.paired_ci95_high": high,
                "speedup.paired_window_ci95_low": window_low, "speedup.paired_window_ci95_high": window_high,
                "speedup.paired_blocks": float(len(self.reference_ms)),
                "speedup.paired_units": float(len(self.unit_log_ratios)),
                "speedup.paired_block_calls": float(self.candidate_block_calls),
                "speedup.paired_fp32_block_calls": float(self.reference_block_calls),
                "speedup.paired_fp32_p50_ms": float(np.median(self.reference_ms)),
                "speedup.paired_p50_ms": float(np.median(self.candidate_ms)),
                "time.paired_window_s": self.seconds}


def block_bootstrap_median_ci(series: np.ndarray, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
                              ) -> tuple[float, float]:
    """Percentile CI of the median of a series whose neighbours are correlated: moving-block bootstrap, runs of
    ``ceil(n ** (1/3))`` consecutive values drawn together (one value per run: the i.i.d. bootstrap)."""
    n = len(series)
    run = max(1, math.ceil(n ** (1 / 3)))
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n - run + 1, size=(resamples, math.ceil(n / run)))
    index = (starts[:, :, None] + np.arange(run)).reshape(resamples, -1)[:, :n]
    medians = np.median(series[index], axis=1)
    alpha = (1 - confidence) / 2
    return float(np.quantile(medians, alpha)), float(np.quantile(medians, 1 - alpha))


def batch_medians_ci(series: np.ndarray, batches: int = BATCHES, confidence: float = 0.95) -> tuple[float, float]:
    """CI of the median of a drifting series by batch means (Schmeiser 1982) on medians: the series cut into
    ``batches`` contiguous runs, the median of all values +- t(batches - 1) x the SD of the runs' medians / sqrt(
    batches). Fewer values than batches: one value per batch."""
    runs = [run for run in np.array_split(series, min(batches, len(series))) if len(run)]
    medians = np.array([np.median(run) for run in runs])
    half = float(scipy.stats.t.ppf(0.5 + confidence / 2, len(runs) - 1) * medians.std(ddof=1) / math.sqrt(len(runs)))
    centre = float(np.median(series))
    return centre - half, centre + half


def relative_halfwidth(result: PairedResult) -> float:
    """Half the window's moving-block CI relative to the estimate (the stopping rule's figure)."""
    estimate, low, high = result.window_interval()
    return (high - low) / 2 / estimate


def time_paired(reference: Callable[[], float], candidate: Callable[[], float], *, block_ms: float,
                min_block_calls: int, min_blocks: int, max_blocks: int, max_duration_s: float, threshold: float,
                warmup_calls: int) -> PairedResult:
    """Time ``reference`` and ``candidate`` (each returns one call's milliseconds) in alternating blocks of about
    ``block_ms`` each (at least ``min_block_calls`` calls; the count per side comes from its warm-up calls)."""
    start = time.perf_counter()
    # each side warms up in a run of its own: alternating calls would all be first calls after a switch, and the
    # block sizes read from them would be a fraction of block_ms
    warm_ref = [reference() for _ in range(max(2, warmup_calls))]
    warm_cand = [candidate() for _ in range(max(2, warmup_calls))]

    def calls_per_block(warm: list[float]) -> int:
        per_call = float(np.median(warm[len(warm) // 2:]))  # the first calls allocate and pack weights
        return max(min_block_calls, math.ceil(block_ms / max(per_call, 1e-6)))

    ref_calls, cand_calls = calls_per_block(warm_ref), calls_per_block(warm_cand)
    ref_blocks: list[float] = []
    cand_blocks: list[float] = []
    stop = "max_blocks"

    def block(fn: Callable[[], float], calls: int) -> float:
        times = [fn() for _ in range(calls)]
        return float(np.median(times[calls // 2:]))  # the first half absorbs the switch from the other model

    for i in range(max_blocks):
        if i % 2 == 0:
            ref_blocks.append(block(reference, ref_calls))
            cand_blocks.append(block(candidate, cand_calls))
        else:
            cand_blocks.append(block(candidate, cand_calls))
            ref_blocks.append(block(reference, ref_calls))
        n = len(ref_blocks)
        if n >= min_blocks and n % 2 == 0:  # whole ABBA pairs
            current = PairedResult(np.array(ref_blocks), np.array(cand_blocks), "", 0.0, ref_calls, cand_calls)
            if relative_halfwidth(current) <= threshold:
                stop = "ci"
                break
        if time.perf_counter() - start > max_duration_s and n >= 2:
            stop = "max_duration"
            break
    return PairedResult(np.array(ref_blocks), np.array(cand_blocks), stop, time.perf_counter() - start, ref_calls,
                        cand_calls)
