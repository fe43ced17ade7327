"""The deployment-gap gate: a real-backend cell far below its simulation is flagged in the summary table,
``qbench compare`` (terminal, md, CSV, HTML) and fails ``qbench check`` with its likely cause.

The figures are the issue's: resnet18 W8A8-pc on ONNX Runtime's u8s8 int8 kernels on a 2-core AVX2-only EPYC
scored 341/360 = 94.72 % on the digits evaluation split, its simulation 359/360 = 99.72 % (-5.00 pt). Cells are
crafted as records and logged to a real MLflow store with qbench's own logger (the gate logic reads only what
the records hold; a real flagged cell end to end comes with the int8-path work)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from xml.etree import ElementTree as ET

import pandas as pd
import pytest

from qbench.config import CheckConfig
from qbench.measure.gap import deployment_gap, likely_cause
from qbench.regress import baseline as bl
from qbench.regress.gates import FAIL, PASS, evaluate, exit_status, run_gates
from qbench.regress.junit import write_junit
from qbench.regress.report import markdown_summary

N_EVAL = 360  # digits evaluation split
FP32_TOP1 = 359 / N_EVAL
BROKEN = "resnet18/w8a8-pc/onnxruntime"
AVX2_EPYC = {"kernel": "int8", "env.cpu.isa": "avx2", "env.cpu.model": "AMD EPYC 7B13", "env.host_id": "h-epyc"}


def _gap_metrics(top1: float, top1_simulated: float | None, agreement: float | None) -> dict[str, float]:
    metrics = {"acc.top1": top1}
    if top1_simulated is not None:
        metrics.update({"acc.top1_simulated": top1_simulated, "acc.gap_top1": top1 - top1_simulated})
    if agreement is not None:
        metrics["acc.agreement_simulated"] = agreement
    return metrics


BROKEN_METRICS = _gap_metrics(341 / N_EVAL, 359 / N_EVAL, 342 / N_EVAL)


# ------------------------------------------------------------------------------------------- verdict
def test_a_5_point_gap_on_avx2_with_the_u8s8_path_is_flagged_naming_vnni() -> None:
    verdict = deployment_gap(BROKEN_METRICS, {**AVX2_EPYC, "int8.path": "u8s8"})
    assert verdict.checked and verdict.flagged
    assert verdict.gap_pt == pytest.approx(-5.0) and verdict.agreement == pytest.approx(0.95)
    assert verdict.breaches == ("gap below -1 pt", "agreement below 98 %")
    assert verdict.cause.startswith("int8 path u8s8 on a CPU without VNNI (env.cpu.isa=avx2): u8×s8 pairwise "
                                    "products saturate in int16")
    assert "backend.int8_path=auto or u8s8_reduce_range" in verdict.cause
    assert verdict.explanation == ("deployed 94.72 % vs simulated 99.72 % (-5.00 pt), agreement with the simulation "
                                   f"95.00 %; flagged: gap below -1 pt, agreement below 98 %; likely cause: "
                                   f"{verdict.cause}")


def test_a_small_gap_with_high_agreement_passes() -> None:
    verdict = deployment_gap(_gap_metrics(0.9942, 0.9972, 0.995), {**AVX2_EPYC, "int8.path": "u8s8"})
    assert verdict.checked and not verdict.flagged and verdict.cause == ""
    assert verdict.gap_pt == pytest.approx(-0.3)
    assert verdict.explanation == "deployed 99.42 % vs simulated 99.72 % (-0.30 pt), agreement with the simulation " \
                                  "99.50 %"


def test_agreement_below_98_percent_alone_flags() -> None:
    verdict = deployment_gap(_gap_metrics(0.9952, 0.9972, 0.97), {**AVX2_EPYC, "env.cpu.isa": "avx2,avx512_vnni"})
    assert verdict.flagged and verdict.breaches == ("agreement below 98 %",)
    assert verdict.cause.startswith("unknown: compare per-layer outputs")  # VNNI host: not the saturation path
    # agreement alone (no labels, so no top-1 gap) is enough, and exactly at the threshold passes
    assert deployment_gap({"acc.agreement_simulated": 0.97}, AVX2_EPYC).flagged
    assert not deployment_gap({"acc.agreement_simulated": 0.98}, AVX2_EPYC).flagged
    assert not deployment_gap(_gap_metrics(0.9872, 0.9972, 0.99), AVX2_EPYC).flagged  # -1.00 pt: at the line


def test_cells_without_a_simulation_are_never_flagged() -> None:
    awful = {"acc.top1": 0.1, "acc.fp32_top1": FP32_TOP1, "acc.agreement_fp32": 0.1}
    for tags in ({"kernel": "fp32"}, {"kernel": "simulated"}, AVX2_EPYC):  # FP32, fake-quant, a user's ONNX model
        assert deployment_gap(awful, tags) == deployment_gap({}, tags)
        assert not deployment_gap(awful, tags).checked and not deployment_gap(awful, tags).flagged
    # a simulated kernel is its own simulation: figures there are never judged
    assert not deployment_gap(BROKEN_METRICS, {"kernel": "simulated"}).checked


def test_likely_cause_reads_the_int8_path_isa_and_op_mix() -> None:
    no_tag = likely_cause(BROKEN_METRICS, AVX2_EPYC)
    assert no_tag.startswith("int8 path not recorded (u8s8, full range, by default) on a CPU without VNNI")
    reason = likely_cause(BROKEN_METRICS, {**AVX2_EPYC, "int8.path": "u8s8", "int8.path_reason": "forced by user"})
    assert reason.endswith("(int8.path_reason: forced by user)")
    for path in ("u8s8_reduce_range", "u8u8"):  # cannot saturate: not the cause
        assert likely_cause(BROKEN_METRICS, {**AVX2_EPYC, "int8.path": path}).startswith("unknown")
    for isa in ("avx2,avx512f,avx512bw,avx512_vnni", "avx2,avx_vnni", "avx2,avx512f,amx_int8", "neon,asimddp"):
        assert likely_cause(BROKEN_METRICS, {**AVX2_EPYC, "env.cpu.isa": isa}).startswith("unknown"), isa
    assert "without VNNI (env.cpu.isa=avx2,avx512f,avx512bw)" in likely_cause(
        BROKEN_METRICS, {**AVX2_EPYC, "env.cpu.isa": "avx2,avx512f,avx512bw"})
    assert likely_cause(BROKEN_METRICS, {**AVX2_EPYC, "kernel": "int4"}).startswith("unknown")
    mixed = likely_cause({**BROKEN_METRICS, "opmix.integer_mac_share": 0.62},
                         {**AVX2_EPYC, "env.cpu.isa": "avx2,avx512_vnni", "kernel": "mixed",
                          "opmix.ops": "Conv=4,QLinearConv=16"})
    assert mixed == "op mix: only 62% of MACs run in integer kernels (Conv=4,QLinearConv=16)"
    assert "of compute ops" in likely_cause({"opmix.integer_op_share": 0.5}, {"kernel": "mixed"})
    both = likely_cause({"opmix.integer_mac_share": 0.5}, {**AVX2_EPYC, "int8.path": "u8s8"})
    assert both.startswith("int8 path u8s8") and "; op mix: only 50% of MACs" in both
    target = likely_cause({}, {**AVX2_EPYC, "int8.path": "u8s8_reduce_range", "quant.target_isa": "avx512_vnni"})
    assert target == ("the simulation targeted quant.target_isa=avx512_vnni but the cell ran on a CPU without VNNI "
                      "(env.cpu.isa=avx2)")


def test_thresholds_come_from_the_check_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert CheckConfig().deployment_gap_pt == 1.0 and CheckConfig().min_agreement_simulated == 0.98
    loose = CheckConfig(deployment_gap_pt=6.0, min_agreement_simulated=0.9)
    assert not deployment_gap(BROKEN_METRICS, AVX2_EPYC, loose).flagged
    strict = CheckConfig(deployment_gap_pt=0.2, min_agreement_simulated=0.999)
    verdict = deployment_gap(_gap_metrics(0.9942, 0.9972, 0.995), AVX2_EPYC, strict)
    assert verdict.breaches == ("gap below -0.2 pt", "agreement below 99.9 %")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "mine.yaml").write_text(
        "suite:\n  check:\n    deployment_gap_pt: 2.5\n    min_agreement_simulated: 0.95\n")
    assert bl.check_settings("mine") == CheckConfig(deployment_gap_pt=2.5, min_agreement_simulated=0.95)
    (tmp_path / "suites" / "bad.yaml").write_text("suite:\n  check:\n    min_agreement_simulated: 98\n")
    with pytest.raises(bl.BaselineError, match=r"min_agreement_simulated=98\.0: must be a fraction"):
        bl.check_settings("bad")
    (tmp_path / "suites" / "bad.yaml").write_text("suite:\n  check:\n    deployment_gap_pt: -1\n")
    with pytest.raises(bl.BaselineError, match=r"deployment_gap_pt=-1\.0: must be >= 0"):
        bl.check_settings("bad")


# --------------------------------------------------------------------------------------------- gates
def _snapshot_cell(metrics: dict[str, float], tags: dict[str, str], kernel: str = "int8") -> dict[str, Any]:
    """A snapshot cell as :func:`qbench.regress.baseline.cell_snapshot` builds it from an MLflow row."""
    row = {"status": "finished", "kernel": kernel, "tags.scheme": "w8a8-pc", "params.quant.method": "ptq",
           "params.quant.weights.bits": "8", "params.quant.activations.bits": "8", "fp32_top1": FP32_TOP1,
           "acc_pct_fp32": metrics["acc.top1"] / FP32_TOP1 * 100,
           **{f"metrics.{k}": v for k, v in metrics.items()}, **{f"tags.{k}": v for k, v in tags.items()}}
    return bl.cell_snapshot(row)


def _run(**cells: dict[str, Any]) -> dict[str, Any]:
    return {"suite": "test", "run_id": "r2", "host": {"host_id": "h-epyc", "cpu": "AMD EPYC 7B13", "isa": "avx2"},
            "cells": dict(cells)}


def test_the_gate_fails_with_and_without_a_baseline(tmp_path: Path) -> None:
    good = _snapshot_cell(_gap_metrics(0.9942, 0.9972, 0.995), {**AVX2_EPYC, "int8.path": "u8s8"})
    broken = _snapshot_cell(BROKEN_METRICS, {**AVX2_EPYC, "int8.path": "u8s8"})
    fp32 = _snapshot_cell({"acc.top1": FP32_TOP1}, {"kernel": "fp32"}, kernel="fp32")
    assert good["deployment"]["tags"]["int8.path"] == "u8s8" and fp32["deployment"] is None
    base, run = _run(**{BROKEN: good}), _run(**{BROKEN: broken, "resnet18/fp32/onnxruntime": fp32})
    for gates in (evaluate(base, run, CheckConfig()), run_gates(run, CheckConfig())):
        (gate,) = [g for g in gates if g.name == "deployment_gap"]  # none for the FP32 cell
        assert gate.outcome == FAIL and exit_status(gates) == 1
        assert "flagged: gap below -1 pt, agreement below 98 %; likely cause: int8 path u8s8 on a CPU without " \
               "VNNI" in gate.detail
    with_base = next(g for g in evaluate(base, run, CheckConfig()) if g.name == "deployment_gap")
    assert with_base.message.startswith(f"{BROKEN} deployment_gap: -0.30 pt -> -5.00 pt (deployed 94.72 %")
    assert run_gates(run, CheckConfig())[0].message.startswith(f"{BROKEN} deployment_gap: — -> -5.00 pt")
    # a new cell (not in the baseline) is still checked; the good run passes against itself
    assert [g.outcome for g in evaluate(_run(), run, CheckConfig()) if g.name == "deployment_gap"] == [FAIL]
    passing = [g for g in evaluate(base, base, CheckConfig()) if g.name == "deployment_gap"]
    assert [g.outcome for g in passing] == [PASS] and "fails below -1 pt or 98 % agreement" in passing[0].detail
    # baselines written before the gate existed have no "deployment" entry: the run's figures still decide
    old_base = json.loads(json.dumps(base))
    del old_base["cells"][BROKEN]["deployment"]
    assert [g.outcome for g in evaluate(old_base, run, CheckConfig()) if g.name == "deployment_gap"] == [FAIL]
    gates = evaluate(base, run, CheckConfig())
    write_junit(tmp_path / "junit.xml", gates, suite="test")
    failures = {c.get("name"): c.find("failure") for c in ET.parse(tmp_path / "junit.xml").iter("testcase")
                if c.get("classname") == f"test.{BROKEN}" and c.find("failure") is not None}
    assert "VNNI" in failures["deployment_gap"].get("message")
    text = markdown_summary(gates, {"suite": "test", "run": run, "baseline": base, "baseline_path": "b.json"})
    failures_md = text.split("## Failures", 1)[1].split("## All gates", 1)[0]
    assert "deployment_gap" in failures_md and "saturate in int16" in failures_md
    no_base = markdown_summary(run_gates(run, CheckConfig()), {"suite": "test", "run": run, "baseline": None,
                                                               "baseline_path": "b.json"})
    assert "only the run's own gates (deployment_gap) are checked" in no_base


# ------------------------------------------------------------------------------ a real MLflow store
def _record(cell: str, metrics: dict[str, float], tags: dict[str, str], cell_dir: Path,
            method: str = "ptq") -> dict[str, Any]:
    model, scheme, backend = cell.split("/")
    bits = 32 if method == "none" else 8
    config = {"model": {"name": model}, "dataset": {"name": "digits"}, "backend": {"name": backend},
              "quant": {"method": method, "weights": {"bits": bits, "granularity": "per_channel"},
                        "activations": {"bits": bits}},
              "measure": {"eval_batch_size": 64}}
    metrics = {"acc.fp32_top1": FP32_TOP1, "latency.p50_ms": 1.0 if method == "none" else 0.6, **metrics}
    return {"cell": cell, "cell_hash": f"{abs(hash(cell)):016x}"[:16], "status": "finished", "metrics": metrics,
            "tags": {"scheme": scheme, **tags}, "config": config, "cell_dir": str(cell_dir),
            "suite": {"name": "smoke"}}


def _suite_records(tmp_path: Path, broken: bool) -> list[dict[str, Any]]:
    """An ONNX Runtime FP32 and W8A8 cell on the AVX2 EPYC (the W8A8 one on the u8s8 path: -5 pt when
    ``broken``, else -0.3 pt at 99.5 % agreement), a simulated torch cell and a user ONNX model's cell."""
    int8 = BROKEN_METRICS if broken else _gap_metrics(0.9942, 0.9972, 0.995)
    return [
        _record("resnet18/fp32/onnxruntime", {"acc.top1": FP32_TOP1}, {**AVX2_EPYC, "kernel": "fp32"}, tmp_path,
                method="none"),
        _record(BROKEN, {**int8, "opmix.integer_mac_share": 1.0}, {**AVX2_EPYC, "int8.path": "u8s8"}, tmp_path),
        _record("resnet18/w8a8-pc/torch", {"acc.top1": 0.9972}, {**AVX2_EPYC, "kernel": "simulated"}, tmp_path),
        _record("mymodel.onnx/w8a8-pc/onnxruntime", {"acc.top1": 0.5}, AVX2_EPYC, tmp_path),
    ]


def _log_suite(uri: str, tmp_path: Path, records: list[dict[str, Any]]) -> str:
    """Log ``records`` as one smoke suite run (parent + child runs) the way qbench's tracker does."""
    from qbench.track.mlflow_tracker import client_for, experiment_id, log_record

    client = client_for(uri)
    exp = experiment_id(client, "qbench", tmp_path)
    parent = client.create_run(exp, run_name="suite:smoke", tags={
        "qbench.suite": "smoke", "qbench.role": "suite", "qbench.cells": str(len(records)),
        "qbench.started_at": "2026-01-01T00:00:00", "qbench.host_id": "h-epyc"}).info.run_id
    for record in records:
        log_record(record, SimpleNamespace(uri=uri, experiment="qbench"), tmp_path, parent)
    client.set_terminated(parent, "FINISHED")
    return parent


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A store with a good suite run, then one whose W8A8 cell fell 5 points below its simulation."""
    cwd = tmp_path_factory.mktemp("gap")
    uri = f"sqlite:///{cwd}/results/mlflow.db"
    good = _log_suite(uri, cwd, _suite_records(cwd, broken=False))
    broken = _log_suite(uri, cwd, _suite_records(cwd, broken=True))
    return SimpleNamespace(cwd=cwd, uri=uri, good=good, broken=broken)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != bl.BASELINES_ENV}


def test_qbench_check_exits_1_on_a_5_point_gap_naming_vnni(store: SimpleNamespace, tmp_path: Path) -> None:
    """No baseline needed: the run's own deployment gap fails the check (real CLI, subprocess)."""
    out = subprocess.run([sys.executable, "-m", "qbench", "check", "--suite", "smoke", "--run", store.broken,
                          "--tracking-uri", store.uri, "--baselines-dir", str(tmp_path / "none"),
                          "--junit", str(tmp_path / "junit.xml"), "--summary", str(tmp_path / "summary.md")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**_env(), "COLUMNS": "200"})
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr
    fails = [line for line in out.stdout.splitlines() if line.startswith("FAIL ")]
    assert len(fails) == 1 and fails[0].startswith(f"FAIL {BROKEN} deployment_gap: — -> -5.00 pt (deployed 94.72 % "
                                                   "vs simulated 99.72 % (-5.00 pt)")
    assert "likely cause: int8 path u8s8 on a CPU without VNNI (env.cpu.isa=avx2)" in fails[0]
    assert "REGRESSION: 1 gates, 0 pass, 0 warn, 1 fail" in out.stdout
    assert "baseline: none at" in out.stdout
    (case,) = ET.parse(tmp_path / "junit.xml").getroot().iter("testcase")
    assert (case.get("classname"), case.get("name")) == (f"smoke.{BROKEN}", "deployment_gap")
    assert "without VNNI" in case.find("failure").get("message")
    assert "saturate in int16" in (tmp_path / "summary.md").read_text().split("## Failures")[1]


def test_qbench_check_gap_gate_with_a_baseline(store: SimpleNamespace, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    from qbench.cli.check import cmd_baseline, cmd_check

    base_dir = str(tmp_path / "baselines")
    common = ["--suite", "smoke", "--tracking-uri", store.uri]
    # without a baseline a run whose gap passes still reports the missing baseline (exit 2, one line)
    assert cmd_check([*common, "--run", store.good, "--baselines-dir", base_dir,
                      "--summary", str(tmp_path / "s0.md")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("qbench check: no baseline for suite 'smoke'") and "\n" not in err
    assert cmd_baseline(["update", *common, "--run", store.good, "--baselines-dir", base_dir]) == 0
    capsys.readouterr()
    assert cmd_check([*common, "--run", store.good, "--baselines-dir", base_dir,
                      "--summary", str(tmp_path / "s1.md")]) == 0
    out = capsys.readouterr().out
    assert f"{BROKEN} deployment_gap" not in "\n".join(line for line in out.splitlines() if line.startswith("FAIL"))
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in (tmp_path / "s1.md").read_text().splitlines()
            if line.startswith("|")]
    gap_rows = [r for r in rows if r[1] == "deployment_gap"]  # none for FP32, simulated, the user's ONNX model
    assert [r[:5] for r in gap_rows] == [[BROKEN, "deployment_gap", "pass", "-0.30 pt", "-0.30 pt"]]
    assert cmd_check([*common, "--run", store.broken, "--baselines-dir", base_dir,
                      "--summary", str(tmp_path / "s2.md")]) == 1
    fails = [line for line in capsys.readouterr().out.splitlines() if line.startswith("FAIL ")]
    gap = next(line for line in fails if " deployment_gap:" in line)
    assert gap.startswith(f"FAIL {BROKEN} deployment_gap: -0.30 pt -> -5.00 pt") and "without VNNI" in gap
    assert any(line.startswith(f"FAIL {BROKEN} acc.top1:") for line in fails)  # and 5 pt below the baseline


def test_compare_shows_the_flag_in_terminal_md_csv_and_html(store: SimpleNamespace, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    from qbench.cli.compare import cmd_compare

    monkeypatch.chdir(store.cwd)
    monkeypatch.setenv("COLUMNS", "250")
    common = ["--tracking-uri", store.uri, "--run-id", store.broken]
    assert cmd_compare(common) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.lstrip().startswith(BROKEN))
    assert "⚠ gap" in row and "-5.00" in row
    assert sum("⚠ gap" in line for line in out.splitlines()) == 2  # the row, then the line with its cause
    assert f"⚠ gap {BROKEN}: deployed 94.72 % vs simulated 99.72 % (-5.00 pt)" in out
    assert "likely cause: int8 path u8s8 on a CPU without VNNI (env.cpu.isa=avx2)" in out

    assert cmd_compare([*common, "--format", "csv"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out), keep_default_na=False).set_index("cell")
    assert table["flags"].to_dict() == {BROKEN: "gap", "resnet18/fp32/onnxruntime": "",
                                        "resnet18/w8a8-pc/torch": "", "mymodel.onnx/w8a8-pc/onnxruntime": ""}
    assert "without VNNI" in table.loc[BROKEN, "gap_cause"]
    assert float(table.loc[BROKEN, "agree_sim"]) == pytest.approx(95)
    assert cmd_compare([*common, "--format", "csv", "--where", "flags == gap", "--columns", "cell"]) == 0
    assert capsys.readouterr().out.split() == ["cell", BROKEN]

    assert cmd_compare([*common, "--format", "md"]) == 0
    md_row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(f"| {BROKEN}"))
    assert "| gap " in md_row and "saturate in int16" in md_row

    assert cmd_compare([*common, "--format", "html", "--out", str(tmp_path / "r.html")]) == 0
    html = (tmp_path / "r.html").read_text()
    flagged_rows = [r for r in html.split("<tr ")[1:] if r.startswith('class="row-finished flagged"')]
    assert len(flagged_rows) == 2 and all(f">{BROKEN}</td>" in r for r in flagged_rows)  # both tables
    assert 'class="text flag" title="deployed 94.72 % vs simulated 99.72 % (-5.00 pt)' in html
    assert f'<li class="flag">⚠ gap {BROKEN}: deployed 94.72 %' in html
    # the good run: nothing flagged anywhere
    assert cmd_compare(["--tracking-uri", store.uri, "--run-id", store.good, "--format", "html", "--out",
                        str(tmp_path / "good.html")]) == 0
    assert "flagged" not in (tmp_path / "good.html").read_text().split("<h2>Comparison</h2>")[1].split("<h2>")[0]


def test_suite_summary_flags_the_gap_with_its_cause(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from qbench.orchestrate import console as suite_report
    from qbench.orchestrate.console import print_summary, summary_frame

    monkeypatch.setattr(suite_report.console, "width", 250)

    cells = [{**r, "_group": ("resnet18", r["cell"].split("/")[2]), "_auto_reference": False}
             for r in _suite_records(tmp_path, broken=True)]
    frame = summary_frame(cells, CheckConfig())
    assert frame.set_index("cell")["flags"].to_dict() == {
        "resnet18/fp32/onnxruntime": "", BROKEN: "gap", "resnet18/w8a8-pc/torch": "",
        "mymodel.onnx/w8a8-pc/onnxruntime": ""}
    print_summary("smoke", frame, 12.0)
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if BROKEN in line and "finished" in line)
    assert "⚠ gap" in row
    line = next(line for line in out.splitlines() if line.startswith(f"  ⚠ gap {BROKEN}: "))
    assert "-5.00 pt" in line and "likely cause: int8 path u8s8 on a CPU without VNNI" in line
    # the suite's own thresholds: a looser gate flags nothing
    assert not summary_frame(cells, CheckConfig(deployment_gap_pt=6, min_agreement_simulated=0.9))["flags"].any()


def test_a_single_cell_summary_shows_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from qbench.orchestrate.cell_summary import print_cell

    record = _suite_records(tmp_path, broken=True)[1]
    print_cell(record)
    out = capsys.readouterr().out
    assert "vs simulation     99.72 % / -5.00 pt  agree w/ simulation" in out
    assert "⚠ deployment gap: deployed 94.72 % vs simulated 99.72 % (-5.00 pt)" in out and "without VNNI" in out
    # the thresholds the cell ran with (its resolved suite.check)
    print_cell({**record, "config": {**record["config"], "suite": {"check": {"deployment_gap_pt": 6.0,
                                                                             "min_agreement_simulated": 0.9}}}})
    assert "deployment gap" not in capsys.readouterr().out
