"""Gate logic of ``qbench check`` on synthetic snapshots (fast: no suite run, no MLflow)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from xml.etree import ElementTree as ET

import numpy as np
import pytest

from qbench.config import CheckConfig
from qbench.regress import baseline as bl
from qbench.regress.gates import FAIL, PASS, WARN, Gate, evaluate, exit_status, slower_p_value
from qbench.regress.junit import write_junit
from qbench.regress.report import markdown_summary

INT8 = "digits_cnn/w8a8-pc/onnxruntime"
FP32 = "digits_cnn/fp32/onnxruntime"


def _samples(median: float, n: int = 400, seed: int = 0) -> list[float]:
    """Latency-like samples: a log-normal body around ``median`` with a right tail."""
    rng = np.random.default_rng(seed)
    return list(median * rng.lognormal(0.0, 0.05, n) + rng.exponential(median * 0.02, n))


def _cell(method: str = "ptq", scheme: str = "w8a8-pc", top1: float = 0.98, fp32_top1: float = 0.985,
          p50: float = 1.0, fp32_p50: float = 2.0, samples: list[float] | None = None, kernel: str = "int8",
          wbits: int = 8, abits: int = 8, status: str = "finished", **extra: Any) -> dict[str, Any]:
    fp32 = method == "none"
    return {
        "status": status, "kernel": "fp32" if fp32 else kernel, "scheme": "fp32" if fp32 else scheme,
        "method": method, "weight_bits": wbits, "activation_bits": abits, "cell_hash": "0" * 16,
        "error": extra.pop("error", None), "host_id": extra.pop("host_id", "h1"), "qbench_version": "0.1.0",
        "unstable": extra.pop("unstable", False),
        "accuracy": {"top1": top1, "top5": 1.0, "agreement_fp32": 0.99, "fp32_top1": fp32_top1,
                     "delta_top1_pt": (top1 - fp32_top1) * 100, "acc_pct_fp32": top1 / fp32_top1 * 100},
        "latency": {"p50_ms": p50, "p99_ms": p50 * 1.5, "n": len(samples or []), "fp32_p50_ms": fp32_p50,
                    "speedup": None if kernel == "simulated" else fp32_p50 / p50, "samples_ms": samples,
                    "fp32_unstable": extra.pop("fp32_unstable", False)},
        "memory": {"peak_rss_inference_mb": extra.pop("rss", 700.0), "peak_rss_load_mb": extra.pop("load", 690.0)},
        "size": {"artifact_bytes": extra.pop("artifact", 30_000.0), "packed_model_bytes": 25_000.0},
    }


def _snapshot(**cells: dict[str, Any]) -> dict[str, Any]:
    host = {"host_id": "h1", "cpu": "Test CPU", "isa": "avx2", "torch": "2.14.1", "onnxruntime": "1.32.0"}
    return {"suite": "test", "run_id": "r1", "host": host, "qbench_version": "0.1.0", "cells": dict(cells)}


def _pair() -> tuple[dict[str, Any], dict[str, Any]]:
    """A baseline with an FP32 and an int8 cell (2x speed-up), and an identical run."""
    base = _snapshot(**{FP32: _cell(method="none", top1=0.985, p50=2.0, samples=_samples(2.0, seed=1), wbits=8),
                        INT8: _cell(samples=_samples(1.0, seed=2))})
    return base, copy.deepcopy(base)


def _gate(gates: list[Gate], cell: str, name: str) -> Gate:
    (found,) = [g for g in gates if g.cell == cell and g.name == name]
    return found


def test_a_run_compared_with_itself_passes_every_gate() -> None:
    base, run = _pair()
    gates = evaluate(base, run, CheckConfig())
    assert exit_status(gates) == 0 and {g.outcome for g in gates} == {PASS}
    names = {(g.cell, g.name) for g in gates}
    assert {(INT8, "acc.top1"), (INT8, "acc.floor"), (INT8, "latency.speedup"), (FP32, "latency.p50_ms"),
            (INT8, "memory.peak_rss_inference_mb"), (INT8, "size.artifact_bytes"), ("(suite)", "host")} <= names
    assert (FP32, "acc.floor") not in names  # FP32 has no floor


def test_top1_drop_beyond_tolerance_fails_naming_cell_metric_old_and_new() -> None:
    base, run = _pair()
    run["cells"][INT8]["accuracy"]["top1"] = 0.97
    gate = _gate(evaluate(base, run, CheckConfig()), INT8, "acc.top1")
    assert gate.outcome == FAIL
    assert gate.message.startswith(f"{INT8} acc.top1: 98.00 % -> 97.00 % (-1.00 pt")
    run["cells"][INT8]["accuracy"]["top1"] = 0.975  # exactly the tolerance: passes
    assert _gate(evaluate(base, run, CheckConfig()), INT8, "acc.top1").outcome == PASS
    assert _gate(evaluate(base, run, CheckConfig(top1_tolerance_pt=0.4)), INT8, "acc.top1").outcome == FAIL


def test_accuracy_floors_per_scheme_and_for_8_bit_schemes() -> None:
    base, run = _pair()
    run["cells"][INT8]["accuracy"]["acc_pct_fp32"] = 98.5  # within the top-1 tolerance, below 99 % of FP32
    gate = _gate(evaluate(base, run, CheckConfig()), INT8, "acc.floor")
    assert gate.outcome == FAIL and "floor 99 %" in gate.detail and "floor_8bit" in gate.detail
    relaxed = CheckConfig(floors={"w8a8-pc": 0.98})
    assert _gate(evaluate(base, run, relaxed), INT8, "acc.floor").outcome == PASS
    four_bit = _snapshot(**{"m/w4a8-pc/torch": _cell(scheme="w4a8-pc", wbits=4, top1=0.5)})
    gates = evaluate(four_bit, four_bit, CheckConfig())
    assert not [g for g in gates if g.name == "acc.floor"]  # no floor for 4-bit unless the suite sets one
    gates = evaluate(four_bit, four_bit, CheckConfig(floors={"w4a8-pc": 0.9}))
    assert _gate(gates, "m/w4a8-pc/torch", "acc.floor").outcome == FAIL


def test_a_language_model_is_gated_on_perplexity_in_its_direction() -> None:
    """Tasks other than image classification: their own metric, relative tolerance, lower-is-better respected;
    the floor reads the task metric as a percentage of FP32's (FP32 perplexity / perplexity)."""
    def lm_cell(ppl: float, fp32_ppl: float = 32.0, **kw: Any) -> dict[str, Any]:
        cell = _cell(scheme="w8-wo-pc", abits=32, **kw)
        cell["method"] = "weight_only"
        cell["accuracy"] = {"top1": None, "task_metric": "lm.perplexity", "task_higher_is_better": False,
                            "task": ppl, "acc_pct_fp32": fp32_ppl / ppl * 100}
        return cell

    name = "language_modeling:smollm2/w8-wo-pc/torch"
    base = _snapshot(**{name: lm_cell(32.1)})
    run = _snapshot(**{name: lm_cell(32.3)})  # +0.6 %: within 1 %
    gates = evaluate(base, run, CheckConfig())
    ppl = _gate(gates, name, "lm.perplexity")
    assert ppl.outcome == PASS and "-0.62 % (lower is better)" in ppl.detail, ppl.message
    assert _gate(gates, name, "acc.floor").outcome == PASS and not [g for g in gates if g.name == "acc.top1"]
    run = _snapshot(**{name: lm_cell(33.0)})  # +2.8 %: a regression, and below 99 % of FP32
    gates = evaluate(base, run, CheckConfig())
    assert _gate(gates, name, "lm.perplexity").outcome == FAIL
    floor = _gate(gates, name, "acc.floor")
    assert floor.outcome == FAIL and "FP32 lm.perplexity" in floor.detail and round(floor.new, 2) == 96.97
    run = _snapshot(**{name: lm_cell(31.0)})  # lower perplexity: better, passes however large
    assert _gate(evaluate(base, run, CheckConfig()), name, "lm.perplexity").outcome == PASS


def test_acc_pct_fp32_follows_the_task_direction() -> None:
    from qbench.track.reference import relative_figures, task_metric

    lm = task_metric({"task.metric": "lm.perplexity", "task.direction": "lower"})
    assert lm == ("lm.perplexity", False) and task_metric({}) == ("acc.top1", True)
    figures = relative_figures({"lm.perplexity": 40.0}, "int4", {"lm.perplexity": 32.0}, lm)
    assert figures["acc_pct_fp32"] == 80.0 and figures["delta_top1_pt"] is None
    figures = relative_figures({"acc.top1": 0.9}, "int8", {"acc.top1": 0.95})
    assert round(figures["acc_pct_fp32"], 4) == round(0.9 / 0.95 * 100, 4)


def test_missing_newly_failing_newly_skipped_and_new_cells() -> None:
    base, run = _pair()
    del run["cells"][INT8]
    gates = evaluate(base, run, CheckConfig())
    missing = _gate(gates, INT8, "status")
    assert missing.outcome == FAIL
    assert missing.message == f"{INT8} status: finished -> missing (cell missing from the run)"
    assert exit_status(gates) == 1

    base, run = _pair()
    run["cells"][INT8].update(status="failed", error="RuntimeError: boom\nTraceback...")
    gate = _gate(evaluate(base, run, CheckConfig()), INT8, "status")
    assert gate.outcome == FAIL and gate.detail == "newly failing: RuntimeError: boom"
    run["cells"][INT8].update(status="skipped", error="backend cannot run W4A8")
    assert _gate(evaluate(base, run, CheckConfig()), INT8, "status").detail.startswith("newly skipped")
    run["cells"][INT8].update(status="finished")
    run["cells"]["digits_cnn/w4-wo-pg32/onnxruntime"] = _cell(scheme="w4-wo-pg32", method="weight_only", wbits=4)
    gates = evaluate(base, run, CheckConfig())
    assert _gate(gates, "digits_cnn/w4-wo-pg32/onnxruntime", "status").outcome == WARN
    assert exit_status(gates) == 0


def test_noise_level_latency_changes_pass() -> None:
    base, run = _pair()
    rng = np.random.default_rng(7)
    for name in (FP32, INT8):  # every sample re-drawn with 2 % noise: a re-run on the same machine
        latency = run["cells"][name]["latency"]
        samples = np.asarray(latency["samples_ms"])
        latency["samples_ms"] = list(samples * rng.normal(1.0, 0.02, samples.size))
        latency["p50_ms"] = float(np.median(latency["samples_ms"]))
    run["cells"][INT8]["latency"].update(fp32_p50_ms=run["cells"][FP32]["latency"]["p50_ms"])
    run["cells"][INT8]["latency"]["speedup"] = run["cells"][FP32]["latency"]["p50_ms"] / run["cells"][INT8]["latency"][
        "p50_ms"]
    gates = evaluate(base, run, CheckConfig())
    assert {g.outcome for g in gates if g.name.startswith("latency")} == {PASS}


def _slower(run: dict[str, Any], cell: str, factor: float) -> None:
    latency = run["cells"][cell]["latency"]
    latency["samples_ms"] = [s * factor for s in latency["samples_ms"]]
    latency["p50_ms"] *= factor
    if latency["speedup"] is not None:
        latency["speedup"] = latency["fp32_p50_ms"] / latency["p50_ms"]


def test_30_percent_slower_fails_on_the_same_host_and_warns_on_another() -> None:
    base, run = _pair()
    _slower(run, INT8, 1.3)
    _slower(run, FP32, 1.3)
    run["cells"][INT8]["latency"]["fp32_p50_ms"] = base["cells"][INT8]["latency"]["fp32_p50_ms"]  # FP32 p50 as before
    run["cells"][INT8]["latency"]["speedup"] = 2.0 / 1.3
    gates = evaluate(base, run, CheckConfig())
    speed = _gate(gates, INT8, "latency.speedup")
    assert speed.outcome == FAIL and speed.old_text == "2.00x" and speed.new_text == "1.54x"
    assert "Mann-Whitney p=" in speed.detail
    assert _gate(gates, FP32, "latency.p50_ms").outcome == WARN  # advisory by default
    assert _gate(evaluate(base, run, CheckConfig(fp32_latency_fails=True)), FP32, "latency.p50_ms").outcome == FAIL
    for name in (INT8, FP32):
        run["cells"][name]["host_id"] = "h2"
    run["host"]["host_id"], run["host"]["cpu"] = "h2", "Other CPU"
    gates = evaluate(base, run, CheckConfig(fp32_latency_fails=True))
    assert _gate(gates, "(suite)", "host").outcome == WARN and "cpu: Test CPU -> Other CPU" in _gate(
        gates, "(suite)", "host").detail
    for name, gate in ((INT8, "latency.speedup"), (FP32, "latency.p50_ms")):
        assert _gate(gates, name, gate).outcome == WARN and "host differs" in _gate(gates, name, gate).detail
    assert exit_status(gates) == 0


def test_a_uniformly_slower_machine_keeps_the_speedup_and_passes() -> None:
    base, run = _pair()
    _slower(run, FP32, 1.6)
    _slower(run, INT8, 1.6)
    run["cells"][INT8]["latency"]["fp32_p50_ms"] *= 1.6
    run["cells"][INT8]["latency"]["speedup"] = 2.0
    gates = evaluate(base, run, CheckConfig())
    assert _gate(gates, INT8, "latency.speedup").outcome == PASS
    fp32 = _gate(gates, FP32, "latency.p50_ms")  # its own p50 did get 60 % slower on this host: reported
    assert fp32.outcome == WARN and fp32.detail.startswith("p50 +60.0%")


def test_unstable_cells_and_insignificant_breaches_warn() -> None:
    base, run = _pair()
    _slower(run, INT8, 1.3)
    run["cells"][INT8]["unstable"] = True
    gate = _gate(evaluate(base, run, CheckConfig()), INT8, "latency.speedup")
    assert gate.outcome == WARN and "unstable" in gate.detail
    run["cells"][INT8]["unstable"] = False
    assert _gate(evaluate(base, run, CheckConfig()), INT8, "latency.speedup").outcome == FAIL
    base["cells"][INT8]["latency"]["fp32_unstable"] = True  # the baseline's FP32 median was unstable
    assert _gate(evaluate(base, run, CheckConfig()), INT8, "latency.speedup").outcome == WARN
    # the median moved a lot but the distributions overlap: a bimodal noisy machine, not a regression
    base, run = _pair()
    old = [1.0, 1.0, 1.0, 1.0, 9.0, 9.0, 9.0]
    new = [1.0, 1.0, 1.0, 9.0, 9.0, 9.0, 9.0]
    base["cells"][INT8]["latency"].update(samples_ms=old, p50_ms=1.0, speedup=2.0)
    run["cells"][INT8]["latency"].update(samples_ms=new, p50_ms=9.0, speedup=2.0 / 9.0)
    gate = _gate(evaluate(base, run, CheckConfig()), INT8, "latency.speedup")
    assert gate.outcome == WARN and "not significant" in gate.detail
    # without samples the tolerance alone decides
    run["cells"][INT8]["latency"]["samples_ms"] = None
    gate = _gate(evaluate(base, run, CheckConfig()), INT8, "latency.speedup")
    assert gate.outcome == FAIL and "tolerance only" in gate.detail


def test_simulated_kernels_get_no_latency_gate() -> None:
    sim = _snapshot(**{"m/w8a8-pc/torch": _cell(kernel="simulated", samples=_samples(1.0))})
    run = copy.deepcopy(sim)
    _slower(run, "m/w8a8-pc/torch", 3.0)
    assert not [g for g in evaluate(sim, run, CheckConfig()) if g.name.startswith("latency")]


def test_mann_whitney_is_one_sided() -> None:
    old = _samples(1.0, seed=3)
    assert slower_p_value(old, [s * 1.3 for s in old]) < 1e-6
    assert slower_p_value(old, [s / 1.3 for s in old]) > 0.99  # faster is never significant
    assert slower_p_value(old[:4], old[:4]) is None


@pytest.mark.parametrize("base_mb,new_mb,outcome", [(700, 760, PASS), (700, 780, FAIL), (100, 160, FAIL),
                                                    (100, 140, PASS), (700, 600, PASS)])
def test_memory_fails_only_beyond_both_tolerances(base_mb: float, new_mb: float, outcome: str) -> None:
    base, run = _pair()
    base["cells"][INT8]["memory"]["peak_rss_inference_mb"] = base_mb
    run["cells"][INT8]["memory"]["peak_rss_inference_mb"] = new_mb
    gate = _gate(evaluate(base, run, CheckConfig()), INT8, "memory.peak_rss_inference_mb")
    assert gate.outcome == outcome and gate.old_text == f"{base_mb:.1f} MB" and gate.new_text == f"{new_mb:.1f} MB"


def test_size_growth_beyond_one_percent_fails() -> None:
    base, run = _pair()
    run["cells"][INT8]["size"]["artifact_bytes"] = 30_000 * 1.02
    gate = _gate(evaluate(base, run, CheckConfig()), INT8, "size.artifact_bytes")
    assert gate.outcome == FAIL and gate.message.startswith(f"{INT8} size.artifact_bytes: 29.3 KiB -> 29.9 KiB")


def test_junit_has_one_testcase_per_gate(tmp_path: Path) -> None:
    base, run = _pair()
    run["cells"][INT8]["accuracy"].update(top1=0.9, acc_pct_fp32=0.9 / 0.985 * 100)
    del run["cells"][FP32]
    run["cells"]["m/new/torch"] = _cell()
    gates = evaluate(base, run, CheckConfig())
    path = tmp_path / "junit.xml"
    write_junit(path, gates, suite="test", properties={"suite_run": "r1"})
    root = ET.parse(path).getroot()
    cases = root.findall("./testsuite/testcase")
    assert len(cases) == len(gates) and root.get("tests") == str(len(gates))
    failed = [c for c in cases if c.find("failure") is not None]
    assert len(failed) == sum(g.outcome == FAIL for g in gates) == int(root.find("testsuite").get("failures")) == 3
    assert {(c.get("classname"), c.get("name")) for c in failed} == {
        (f"test.{INT8}", "acc.top1"), (f"test.{INT8}", "acc.floor"), (f"test.{FP32}", "status")}
    warned = [c for c in cases if (c.findtext("system-out") or "").startswith("WARNING: ")]
    assert [c.get("classname") for c in warned] == ["test.m/new/torch"]
    text = markdown_summary(gates, {"suite": "test", "run": run, "baseline": base, "baseline_path": "b.json"})
    assert text.index("## Failures") < text.index("## Warnings") < text.index("## All gates")
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("|")]
    assert [FP32, "status", "fail", "finished", "missing", "cell missing from the run"] in rows


# ------------------------------------------------------------------------------------ baseline files
def test_compact_samples_keeps_the_distribution() -> None:
    samples = np.random.default_rng(0).lognormal(0, 0.3, 20_000)
    kept = bl.compact_samples(samples)
    assert kept is not None and len(kept) == bl.MAX_SAMPLES
    assert abs(np.median(kept) - np.median(samples)) / np.median(samples) < 0.01
    assert bl.compact_samples(np.array([1.234567891])) == [1.2346] and bl.compact_samples(None) is None


def test_build_baseline_needs_a_complete_run_without_failures(tmp_path: Path) -> None:
    base, _ = _pair()
    snapshot = {**base, "planned_cells": 3, "run_status": "FINISHED", "started_at": "t", "git_sha": "abc"}
    with pytest.raises(bl.BaselineError, match="not complete"):
        bl.build_baseline(snapshot, uri="sqlite:///x.db", experiment="qbench")
    snapshot["planned_cells"] = 2
    snapshot["cells"][INT8]["status"] = "failed"
    with pytest.raises(bl.BaselineError, match="failed cells"):
        bl.build_baseline(snapshot, uri="sqlite:///x.db", experiment="qbench")
    data = bl.build_baseline(snapshot, uri="http://user:secret@mlflow:5000", experiment="qbench", allow_failed=True)
    assert data["source"]["tracking_uri"] == "http://mlflow:5000"  # no credentials in a committed file
    path = tmp_path / "test.json"
    bl.write_baseline(path, data)
    assert bl.read_baseline(path)["cells"] == json.loads(json.dumps(snapshot["cells"]))
    with pytest.raises(bl.BaselineError, match="create one: qbench baseline update --suite nope"):
        bl.read_baseline(tmp_path / "nope.json")


def test_check_settings_and_baseline_location_follow_the_suite_yaml(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(bl.BASELINES_ENV, raising=False)
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "mine.yaml").write_text(
        "suite:\n  name: mine\n  check:\n    top1_tolerance_pt: 1.5\n    floors: {w4a8-pc: 0.9}\n")
    settings = bl.check_settings("mine")
    assert settings.top1_tolerance_pt == 1.5 and settings.floors == {"w4a8-pc": 0.9}
    assert settings.speedup_tolerance == CheckConfig().speedup_tolerance
    assert bl.baseline_path("mine") == tmp_path / "suites" / "baselines" / "mine.json"
    smoke = bl.check_settings("smoke")  # qbench's own suite
    assert smoke.floors["w4-wo-pg32"] == 0.97
    monkeypatch.setenv(bl.BASELINES_ENV, str(tmp_path / "elsewhere"))
    assert bl.baseline_path("mine") == tmp_path / "elsewhere" / "mine.json"
    (tmp_path / "suites" / "bad.yaml").write_text("suite:\n  check:\n    top1_tolerance: 1\n")
    with pytest.raises(bl.BaselineError, match="top1_tolerance"):
        bl.check_settings("bad")
    (tmp_path / "suites" / "bad.yaml").write_text("suite:\n  check:\n    floors: {w8a8: 99}\n")
    with pytest.raises(bl.BaselineError, match="fraction"):
        bl.check_settings("bad")
    monkeypatch.delenv(bl.BASELINES_ENV)
    with pytest.raises(bl.BaselineError, match="unknown suite 'nope'"):
        bl.baseline_path("nope")


def test_snapshot_finds_the_fp32_cell_of_a_speedup_by_identity_not_by_its_p50(monkeypatch) -> None:
    """Two FP32 cells with the same p50, one unstable: each quantized cell is flagged by its own reference."""
    import pandas as pd

    from qbench.track import query

    def row(cell: str, backend: str, method: str, p50: float, unstable: bool, kernel: str) -> dict[str, Any]:
        return {"cell": cell, "run_id": cell, "status": "finished", "kernel": kernel, "params.quant.method": method,
                "params.model.name": "digits_cnn", "params.backend.name": backend, "metrics.acc.top1": 0.98,
                "metrics.latency.p50_ms": p50, "tags.latency.unstable": "true" if unstable else "false"}

    frame = pd.DataFrame([
        row("digits_cnn/fp32/onnxruntime", "onnxruntime", "none", 0.3, False, "fp32"),
        row("digits_cnn/fp32/torch_int8", "torch_int8", "none", 0.3, True, "fp32"),
        row("digits_cnn/w8a8-pc/onnxruntime", "onnxruntime", "ptq", 0.2, False, "int8"),
        row("digits_cnn/w8a8-pc/torch_int8", "torch_int8", "ptq", 0.2, False, "int8"),
    ])
    monkeypatch.setattr(query, "cell_runs", lambda uri, run_id: frame)
    parent = SimpleNamespace(info=SimpleNamespace(run_id="parent", status="FINISHED"),
                             data=SimpleNamespace(tags={"qbench.suite": "s", "qbench.cells": "4"}))
    cells = bl.run_snapshot("sqlite:///unused.db", parent, with_samples=False)["cells"]
    assert cells["digits_cnn/w8a8-pc/onnxruntime"]["latency"]["fp32_unstable"] is False
    assert cells["digits_cnn/w8a8-pc/torch_int8"]["latency"]["fp32_unstable"] is True
    assert cells["digits_cnn/w8a8-pc/torch_int8"]["latency"]["speedup"] == pytest.approx(1.5)
