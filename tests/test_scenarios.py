"""MLPerf load scenarios through LoadGen (measure.scenario; qbench/measure/scenarios.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from qbench.measure.scenarios import measure_scenario, parse_summary

pytest.importorskip("mlperf_loadgen", reason="mlcommons-loadgen is not installed")

FAST = ("measure=quick", "tracking=none", "measure.latency.min_calls=10", "measure.latency.min_duration_s=0.1",
        "measure.energy.duration_s=0", "measure.paired.enabled=false")


def test_summary_lines_are_parsed() -> None:
    text = ("Scenario : Server\nResult is : VALID\n  Min duration satisfied : Yes\n"
            "99.00 percentile latency (ns)   : 2364728\ntarget_qps : 681.818\n")
    summary = parse_summary(text)
    assert summary["Result is"] == "VALID" and summary["99.00 percentile latency (ns)"] == "2364728"
    assert summary["target_qps"] == "681.818"


def test_server_search_finds_a_qps_whose_p99_meets_the_bound(tmp_path: Path) -> None:
    """A 2 ms model served by one worker: it can sustain < 500 QPS; the bisection's best QPS meets a 20 ms p99."""
    def infer(indices) -> None:
        time.sleep(0.002 * len(indices))

    metrics, tags = measure_scenario(infer, 64, "server", tmp_path, quick=True, p50_ms=2.0, p99_bound_ms=20.0,
                                     search_steps=4)
    assert 0 < metrics["scenario.server.max_qps"] < 500, (metrics, tags)
    assert metrics["scenario.server.p99_ms"] <= 20.0 and metrics["scenario.server.search_runs"] == 4
    assert len(tags["scenario.server.probes"].split("; ")) == 4 and tags["scenario.mode"] == "quick"
    assert (tmp_path / "qps_0" / "mlperf_log_summary.txt").is_file()  # LoadGen's own logs are kept


@pytest.mark.slow  # 20-60 s: keeps the default run near 15 min on 2 cores (pytest -m slow runs it)
def test_an_fp32_and_an_int8_cell_report_offline_throughput(run_qbench, tmp_path: Path) -> None:
    for quant in ("fp32", "w8a8_pc"):
        out = run_qbench("run", "model=digits_cnn", "backend=onnxruntime", f"quant={quant}",
                         "measure.scenario=offline", *FAST)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in tmp_path.glob("results/**/record.json")]
    assert len(records) == 2
    for record in records:
        assert record["metrics"]["scenario.offline.samples_per_s"] > 0, record["metrics"]
        assert record["tags"]["scenario"] == "offline" and record["tags"]["scenario.loadgen"] == "mlcommons-loadgen"


def test_a_scenario_without_loadgen_is_a_skip_with_its_reason(compose, monkeypatch) -> None:
    import importlib.util

    from qbench import config as qconfig
    from qbench.orchestrate import preflight

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlperf_loadgen"
                        else real(name, *a))
    cfg = qconfig.validate(compose("model=digits_cnn", "backend=onnxruntime", "measure.scenario=server"))
    reason = preflight.unsupported_reason(cfg)
    assert reason is not None and "LoadGen" in reason and "qbench[loadgen]" in reason


def test_an_unknown_scenario_lists_the_valid_ones(compose) -> None:
    from qbench import config as qconfig

    with pytest.raises(qconfig.ConfigError, match="single_stream"):
        qconfig.validate(compose("measure.scenario=batch"))
