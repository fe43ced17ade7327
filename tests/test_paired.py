"""Paired speed-up: a quantized cell timed interleaved with its FP32 reference (qbench/measure/paired.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from qbench.measure.paired import time_paired
from qbench.track.reference import relative_figures

FAST = ("measure=quick", "tracking=none", "measure.latency.min_calls=10", "measure.latency.min_duration_s=0.1",
        "measure.energy.duration_s=0")


def _drifting_pair(speedup: float, seed: int = 0):
    """Two fake timed calls whose true ratio is ``speedup`` on a host that drifts by up to 2x (slow sine) and
    jitters 10 % per call: what an unpaired comparison of two windows minutes apart cannot separate."""
    rng = np.random.default_rng(seed)
    clock = [0]

    def host() -> float:
        clock[0] += 1
        return (1.5 + 0.5 * math.sin(clock[0] / 500)) * rng.lognormal(0.0, 0.1)

    return (lambda: 2.0 * host()), (lambda: 2.0 / speedup * host())


def test_interleaved_blocks_recover_the_true_ratio_under_drift() -> None:
    reference, candidate = _drifting_pair(1.6)
    result = time_paired(reference, candidate, block_ms=60, min_block_calls=5, min_blocks=16, max_blocks=40,
                         max_duration_s=60, threshold=0.02, warmup_calls=2)
    estimate, low, high = result.interval()
    assert low <= 1.6 <= high and abs(estimate - 1.6) < 0.05, (estimate, low, high)
    assert result.stop == "ci" and 16 <= len(result.reference_ms) < 40  # stopped by the CI rule
    m = result.metrics()
    assert m["speedup.paired"] == estimate and m["speedup.paired_blocks"] == len(result.reference_ms)
    # the same host, timed unpaired: the reference's window early, the candidate's much later
    reference, candidate = _drifting_pair(1.6)
    ref_window = np.median([reference() for _ in range(400)])
    for _ in range(1200):
        candidate()
    unpaired = ref_window / np.median([candidate() for _ in range(400)])
    assert abs(unpaired - 1.6) > 0.2  # drift, not the scheme


def test_the_switch_transient_after_the_other_model_does_not_bias_the_ratio() -> None:
    """The first milliseconds after the other model ran are slow (measured on ONNX Runtime: FP32's first call 23-29x
    its settled time, +12 % at calls 11-20), so a whole block's median favours whichever model ran first in its
    pair. Counting each block's second half and pairing AB with the BA after it recovers the true ratio."""
    last = {"model": "", "ms_since_switch": 0.0}

    def model(name: str, settled_ms: float):
        def call() -> float:
            if last["model"] != name:
                last["model"], last["ms_since_switch"] = name, 0.0
            ms = settled_ms * (1.0 + 0.5 * math.exp(-last["ms_since_switch"] / 15.0))
            last["ms_since_switch"] += ms
            return ms

        return call

    result = time_paired(model("fp32", 2.0), model("int8", 1.0), block_ms=60, min_block_calls=5, min_blocks=8,
                         max_blocks=8, max_duration_s=60, threshold=0.0, warmup_calls=20)
    per_pair = np.exp(result.log_ratios)
    assert result.reference_block_calls >= 20 and result.candidate_block_calls >= 40  # sized by settled calls
    # whole blocks: the cold side's median call runs ~30 ms after the switch (+7 % here, pairs 14 % apart); its
    # second half's ~45 ms after it (+2.5 %), and the unit cancels that remainder
    assert per_pair.max() / per_pair.min() < 1.07, per_pair
    estimate, low, high = result.interval()
    assert abs(estimate - 2.0) < 0.01 and low <= estimate <= high, (estimate, low, high)
    assert result.metrics()["speedup.paired_units"] == 4


def test_tables_take_the_paired_speedup_and_keep_the_unpaired_one() -> None:
    metrics = {"latency.p50_ms": 1.0, "speedup.paired": 1.7}
    figures = relative_figures(metrics, "int8", {"latency.p50_ms": 1.5})
    assert figures["speedup"] == 1.7 and figures["speedup_unpaired"] == 1.5
    assert relative_figures({"latency.p50_ms": 1.0}, "int8", {"latency.p50_ms": 1.5})["speedup"] == 1.5
    assert relative_figures(metrics, "simulated", {"latency.p50_ms": 1.5})["speedup"] is None


def test_a_real_int8_cell_reports_a_paired_speedup_with_its_ci(run_qbench, tmp_path: Path) -> None:
    out = run_qbench("run", "model=digits_cnn", "backend=onnxruntime", "quant=w8a8_pc", *FAST)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (path,) = tmp_path.glob("results/**/record.json")
    record = json.loads(path.read_text())
    m, tags = record["metrics"], record["tags"]
    assert m["speedup.paired_ci95_low"] <= m["speedup.paired"] <= m["speedup.paired_ci95_high"]
    assert m["speedup.paired_window_ci95_low"] <= m["speedup.paired"] <= m["speedup.paired_window_ci95_high"]
    assert m["speedup.paired_units"] == m["speedup.paired_blocks"] // 2 >= 1
    assert m["speedup.paired_blocks"] >= 2 and m["time.paired_s"] >= m["time.paired_window_s"] > 0
    assert tags["speedup.paired_stop"] in ("ci", "max_blocks", "max_duration")
    assert not [p for p in path.parent.rglob("*") if "tmp" in p.name]  # the reference's scratch files are gone
    # an FP32 cell and a simulated cell have no paired figure
    out = run_qbench("run", "model=digits_cnn", "backend=torch", "quant=w8a8_pc", "results_dir=sim", *FAST)
    assert out.returncode == 0, out.stderr[-3000:]
    (sim,) = tmp_path.glob("sim/**/record.json")
    assert "speedup.paired" not in json.loads(sim.read_text())["metrics"]


def test_blocks_are_sized_by_time_for_each_side() -> None:
    """A block lasts about block_ms on each side: a 10x faster model runs 10x more calls per block, and a slow
    one never fewer than min_block_calls (the first calls after a switch are the costly ones)."""
    calls = {"ref": 0, "cand": 0}

    def reference() -> float:
        calls["ref"] += 1
        return 10.0

    def candidate() -> float:
        calls["cand"] += 1
        return 1.0

    result = time_paired(reference, candidate, block_ms=50, min_block_calls=3, min_blocks=2, max_blocks=2,
                         max_duration_s=60, threshold=0.0, warmup_calls=4)
    m = result.metrics()
    assert m["speedup.paired_fp32_block_calls"] == 5 and m["speedup.paired_block_calls"] == 50
    assert calls == {"ref": 4 + 2 * 5, "cand": 4 + 2 * 50} and abs(m["speedup.paired"] - 10.0) < 1e-9
    slow = time_paired(lambda: 400.0, candidate, block_ms=50, min_block_calls=3, min_blocks=2, max_blocks=2,
                       max_duration_s=60, threshold=0.0, warmup_calls=2)
    assert slow.reference_block_calls == 3


def test_the_ci_widens_when_the_ratio_itself_drifts_within_the_window() -> None:
    """Independent block ratios: the moving-block CI is about the i.i.d. one. Ratios that wander together over
    several blocks (the host's drift reaching the two models unequally): the moving-block CI is wider, as the
    spread of such windows' medians is."""
    from qbench.measure.latency import bootstrap_median_ci
    from qbench.measure.paired import block_bootstrap_median_ci

    def width(ci: tuple[float, float]) -> float:
        return ci[1] - ci[0]

    ratios: dict[str, list[float]] = {"independent": [], "wandering": []}
    for seed in range(20):
        rng = np.random.default_rng(seed)
        series = {"independent": rng.normal(0.0, 0.03, 40),
                  "wandering": np.repeat(rng.normal(0.0, 0.03, 8), 5) + rng.normal(0.0, 0.005, 40)}
        for kind, logs in series.items():
            ratios[kind].append(width(block_bootstrap_median_ci(logs)) / width(bootstrap_median_ci(logs)))
    assert 0.75 < np.median(ratios["independent"]) < 1.25, ratios
    assert np.median(ratios["wandering"]) > 1.4, ratios
    low, high = block_bootstrap_median_ci(np.array([0.1, 0.1, 0.1]))
    assert low == high == 0.1


def test_the_reported_ci_holds_a_ratio_that_shifts_within_the_window() -> None:
    """A window whose ratio steps by 6 % halfway (the host's drift reaching the two models unequally): the
    reported batch-means CI spans both levels, as a repeat timing could land on either; the window's moving-block
    CI (the stopping rule's) holds neither. Independent ratios: the batch CI still holds the true value."""
    from qbench.measure.paired import batch_medians_ci, block_bootstrap_median_ci

    rng = np.random.default_rng(0)
    shifted = np.concatenate([rng.normal(0.0, 0.005, 10), rng.normal(0.06, 0.005, 10)])
    low, high = batch_medians_ci(shifted)
    window_low, window_high = block_bootstrap_median_ci(shifted)
    assert low < 0.0 and high > 0.06, (low, high)
    assert not (window_low < 0.0 and window_high > 0.06), (window_low, window_high)
    held = 0
    for seed in range(40):
        low, high = batch_medians_ci(np.random.default_rng(seed).normal(0.1, 0.03, 20))
        held += low <= 0.1 <= high
    assert held >= 35, held  # a 95 % interval: 38 of 40 expected
    assert batch_medians_ci(np.array([0.1, 0.1, 0.1])) == pytest.approx((0.1, 0.1))
