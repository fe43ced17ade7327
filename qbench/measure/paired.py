"""Paired speed-up: a quantized model timed interleaved with its FP32 reference in one process.

The ratio of two p50s measured in different worker processes minutes apart is mostly host drift on a shared
machine (measured on a 2-core EPYC VM: FP32 alone moved between 1.47 and 2.32 ms within one minute). Interleaving
cancels drift that is slower than a block: calls run in blocks of about ``block_ms`` each, FP32 and quantized in
turn (ABBA order: A B, then B A, ... so a trend within a pair favours neither), and each pair of adjacent blocks
gives one ratio, FP32 median / quantized median. The paired speed-up is the median of those ratios.

Blocks are sized by time, not by a call count: each switch between the two models costs the next block its first
calls (caches refilled with the other model's weights, the other session's thread pool still spinning). Measured
on resnet18 ONNX Runtime sessions at 0.7 ms a call (2-core Xeon, quiet): blocks of 20 calls gave per-block ratios
from 0.84 to 1.59 (IQR 0.99-1.26), blocks of 100 calls 0.93-1.07 (IQR 0.98-1.04) for the same two sessions. A
block of ~100 ms makes the switch cost small for a fast model and keeps a slow one to a few calls per block.

Its confidence interval: a percentile bootstrap of the median over the per-block log-ratios. Adjacent blocks are
not independent either: the host drifts over seconds, and a window's ratios wander with it (resnet18 on ONNX
Runtime, 2-core Xeon, quiet: ten windows in one process had a round-to-round SD of 0.036 while their i.i.d.
bootstrap CIs were about +-0.02 wide, and two missed an independent timing run right after). So the bootstrap
resamples runs of ceil(n^(1/3)) consecutive blocks together (moving-block bootstrap, Kuensch 1989), which widens
the CI by what drift within the window adds, and the stopping rule below sees that width. A Hodges-Lehmann
estimate would be a little more efficient on symmetric log-ratios, but the median and its bootstrap are what the
rest of qbench reports (the p50 and its CI), so the two figures read alike.

The window stops as the latency window does: after ``min_blocks`` once the CI's relative half-width is within
``measure.latency.stability_threshold``, else at ``max_blocks`` or ``max_duration_s``; what stopped it is recorded
(``speedup.paired_stop``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


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
        return np.log(self.reference_ms / self.candidate_ms)

    def interval(self) -> tuple[float, float, float]:
        """Paired speed-up (median of per-block ratios) and its 95 % moving-block bootstrap CI."""
        logs = self.log_ratios
        low, high = block_bootstrap_median_ci(logs) if len(logs) > 1 else (logs[0], logs[0])
        return math.exp(float(np.median(logs))), math.exp(low), math.exp(high)

    def metrics(self) -> dict[str, float]:
        estimate, low, high = self.interval()
        return {"speedup.paired": estimate, "speedup.paired_ci95_low": low, "speedup.paired_ci95_high": high,
                "speedup.paired_blocks": float(len(self.reference_ms)),
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


def relative_halfwidth(result: PairedResult) -> float:
    """Half the CI's width relative to the estimate (the stopping rule's figure)."""
    estimate, low, high = result.interval()
    return (high - low) / 2 / estimate


def time_paired(reference: Callable[[], float], candidate: Callable[[], float], *, block_ms: float,
                min_block_calls: int, min_blocks: int, max_blocks: int, max_duration_s: float, threshold: float,
                warmup_calls: int) -> PairedResult:
    """Time ``reference`` and ``candidate`` (each returns one call's milliseconds) in alternating blocks of about
    ``block_ms`` each (at least ``min_block_calls`` calls; the count per side comes from its warm-up calls)."""
    start = time.perf_counter()
    warm_ref, warm_cand = [], []
    for _ in range(max(2, warmup_calls)):
        warm_ref.append(reference())
        warm_cand.append(candidate())

    def calls_per_block(warm: list[float]) -> int:
        per_call = float(np.median(warm[len(warm) // 2:]))  # the first calls allocate and pack weights
        return max(min_block_calls, math.ceil(block_ms / max(per_call, 1e-6)))

    ref_calls, cand_calls = calls_per_block(warm_ref), calls_per_block(warm_cand)
    ref_blocks: list[float] = []
    cand_blocks: list[float] = []
    stop = "max_blocks"

    def block(fn: Callable[[], float], calls: int) -> float:
        return float(np.median([fn() for _ in range(calls)]))

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
