"""Statistics and metrics on known inputs: latency summaries, accuracy/fidelity figures, memory."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from qbench.measure import accuracy
from qbench.measure.latency import (
    bootstrap_median_ci,
    median_ci_halfwidth,
    robust_cv,
    summarize,
    time_calls,
    wall_clock_call,
)


def test_summary_percentiles_match_numpy() -> None:
    samples = np.arange(1, 1001, dtype=float)  # 1..1000 ms
    stats = summarize(samples)
    assert stats.n == 1000
    assert stats.p50_ms == pytest.approx(500.5)
    assert stats.p90_ms == pytest.approx(np.percentile(samples, 90))
    assert stats.p99_ms == pytest.approx(990.01)
    assert stats.mean_ms == pytest.approx(500.5)
    assert stats.std_ms == pytest.approx(samples.std(ddof=1))
    assert stats.cv == pytest.approx(samples.std(ddof=1) / 500.5)
    assert stats.ci95_low_ms < stats.p50_ms < stats.ci95_high_ms


def test_bootstrap_ci_covers_the_true_median() -> None:
    rng = np.random.default_rng(0)
    covered = 0
    for trial in range(40):
        samples = rng.lognormal(mean=0.0, sigma=0.5, size=300)  # true median = 1.0
        low, high = bootstrap_median_ci(samples, resamples=500, seed=trial)
        covered += low <= 1.0 <= high
        assert low <= np.median(samples) <= high
    assert covered >= 34  # ~95 % nominal coverage, allow sampling noise


def test_ci_narrows_with_more_samples_and_robust_cv_ignores_outliers() -> None:
    rng = np.random.default_rng(1)
    small, large = rng.normal(10, 1, 100), rng.normal(10, 1, 10000)
    assert median_ci_halfwidth(large) < median_ci_halfwidth(small) / 5
    spiky = rng.normal(10, 0.1, 5000)
    spiky[:25] = 200.0  # 0.5 % of calls stalled
    assert robust_cv(spiky) < 0.02 and (spiky.std() / spiky.mean()) > 0.5


def test_time_calls_meets_count_and_duration() -> None:
    calls = []
    samples, stop = time_calls(wall_clock_call(lambda: calls.append(1)), warmup_calls=3, warmup_s=0.0,
                               min_calls=50, min_duration_s=0.05, max_duration_s=5.0)
    assert len(samples) >= 50 and len(calls) >= 53 and stop == "min_reached"
    assert samples.sum() <= 5000


def test_accuracy_metrics_on_hand_made_logits() -> None:
    labels = torch.tensor([0, 1, 2, 3])
    ref = torch.tensor([[5.0, 1, 0, 0, 0, 0], [0, 5.0, 1, 0, 0, 0], [0, 0, 5.0, 1, 0, 0], [0, 0, 1, 5.0, 0, 0]])
    out = ref.clone()
    out[3] = torch.tensor([0, 0, 5.0, 1, 0, 0])  # one wrong prediction (label 3 in top-2 still)
    m = accuracy.accuracy_metrics(out, labels, ref)
    assert m["acc.top1"] == 0.75 and m["acc.fp32_top1"] == 1.0 and m["acc.delta_top1"] == -0.25
    assert m["acc.top5"] == 1.0 and m["acc.agreement_fp32"] == 0.75
    noise = float((ref - out).pow(2).sum())
    assert m["acc.sqnr_db"] == pytest.approx(10 * math.log10(float(ref.pow(2).sum()) / noise))
    assert m["acc.kl_fp32"] > 0
    same = accuracy.accuracy_metrics(ref, labels, ref)
    assert same["acc.kl_fp32"] == pytest.approx(0.0, abs=1e-12) and math.isinf(same["acc.sqnr_db"])


def test_peak_rss_can_be_reset_and_sees_allocations() -> None:
    """In a fresh process (as qbench's workers are): a long-lived test process may reuse freed resident pages."""
    import subprocess
    import sys

    script = (
        "import json, numpy as np; from qbench.measure import memory\n"
        "big = np.ones(256 * 2**20 // 8); peak_with_big = memory.snapshot_mb()['peak_rss_mb']; del big\n"
        "reset = memory.reset_peak(); after_reset = memory.snapshot_mb()['peak_rss_mb']\n"
        "block = np.ones(128 * 2**20 // 8); after_alloc = memory.snapshot_mb()['peak_rss_mb']\n"
        "print(json.dumps([reset, peak_with_big, after_reset, after_alloc]))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    reset, peak_with_big, after_reset, after_alloc = json.loads(out.stdout)
    if not reset:
        pytest.skip("/proc/self/clear_refs not writable here")
    assert peak_with_big - after_reset > 200  # the 256 MiB peak was forgotten by the reset
    assert after_alloc - after_reset > 100  # a new 128 MiB allocation is seen


def test_stability_gate_retries_then_tags_unstable() -> None:
    """A bimodal call-time distribution keeps the median's CI wide: one retry, then `unstable`."""
    from qbench.config import LatencyConfig
    from qbench.measure.latency import measure_latency

    values = iter([1.0, 3.0] * 10_000)
    cfg = LatencyConfig(warmup_calls=0, warmup_s=0.0, min_calls=20, min_duration_s=0.0, max_duration_s=5.0,
                        stability_threshold=0.02, retries=1, window="fixed")
    timed = measure_latency(lambda: next(values), cfg)
    assert timed.attempts == 2 and timed.unstable
    steady = measure_latency(lambda: 1.0, cfg)
    assert steady.attempts == 1 and not steady.unstable and steady.gate_value == 0.0


def test_adaptive_window_goes_on_until_stable_and_records_what_stopped_it() -> None:
    """Noisy first calls, then steady ones: the adaptive window passes its minimum and stops once the median's CI
    meets the threshold; a window that never settles ends at max_duration, unstable, without a retry. The energy
    meter reads the counters over exactly the measured calls."""
    import itertools

    from qbench.config import LatencyConfig
    from qbench.measure.energy import EnergyMeter
    from qbench.measure.latency import measure_latency

    settling = itertools.chain([1.0, 3.0] * 50, itertools.repeat(1.0))
    cfg = LatencyConfig(warmup_calls=0, warmup_s=0.0, min_calls=20, min_duration_s=0.0, max_duration_s=5.0,
                        stability_threshold=0.02, window="adaptive")
    meter = EnergyMeter(use_gpu=False)
    timed = measure_latency(lambda: next(settling), cfg, on_window=meter)
    assert timed.stop == "stable" and not timed.unstable and timed.attempts == 1
    assert 100 < len(timed.samples_ms) < 1000  # past the noisy calls, not to max_duration
    assert meter.window(len(timed.samples_ms)).calls == len(timed.samples_ms) and meter.seconds < 1.0
    bimodal = itertools.cycle([1.0, 3.0])
    short = LatencyConfig(warmup_calls=0, warmup_s=0.0, min_calls=20, min_duration_s=0.0, max_duration_s=0.3,
                          stability_threshold=0.02, window="adaptive", retries=3)
    timed = measure_latency(lambda: next(bimodal), short)
    assert timed.stop == "max_duration" and timed.unstable and timed.attempts == 1
