"""Suites: grid expansion and narrowing, FP32 references, isolation of crashing cells, resume after kill -9,
one MLflow parent run with a child per cell."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from suite_cells import SMOKE_BASE, SMOKE_BASE_CELLS, SMOKE_CELLS, SMOKE_TORCH, smoke_skip_reasons


def _cells(out: str) -> list[str]:
    """Cell names listed by suite.dry_run=true."""
    return [line.split()[1] for line in out.splitlines() if line.strip()[:1].isdigit() and ". " in line]


def _suite_records(cwd: Path, suite: str) -> dict[str, dict]:
    paths = sorted((cwd / "results" / "suites" / suite).glob("*/run-*/cells/*/record.json"))
    return {json.loads(p.read_text())["cell"]: json.loads(p.read_text()) | {"_path": str(p)} for p in paths}


def test_vision_suite_narrowed_from_the_command_line(run_qbench) -> None:
    full = run_qbench("run", "+suite=vision", "suite.dry_run=true")
    assert full.returncode == 0, full.stderr
    assert len(_cells(full.stdout)) == 3 * 8 * 5  # 3 reference models x 8 schemes x 5 backends
    narrowed = run_qbench("run", "+suite=vision", "model=digits_cnn", "backend=torch", "suite.dry_run=true")
    assert narrowed.returncode == 0, narrowed.stderr
    cells = _cells(narrowed.stdout)
    assert len(cells) == 8 and all(c.startswith("digits_cnn/") and c.endswith("/torch") for c in cells)
    assert cells[0] == "digits_cnn/fp32/torch"  # references first


def test_fp32_reference_is_added_when_the_grid_lacks_it(run_qbench) -> None:
    out = run_qbench("run", "+suite=smoke", "quant=w4a8_pc", "backend=torch", "suite.dry_run=true")
    assert out.returncode == 0, out.stderr
    cells = _cells(out.stdout)
    assert cells == ["digits_cnn/fp32/torch", "digits_cnn/w4a8-pc-mse/torch"]
    assert "(FP32 reference added)" in out.stdout


def test_unsupported_cells_are_listed_as_skipped_with_reason(run_qbench) -> None:
    out = run_qbench("run", "+suite=smoke", "backend.device=cuda:7", "suite.dry_run=true")
    assert out.returncode == 0
    if "skipped" not in out.stdout:
        pytest.skip("this host has 8 CUDA devices")
    assert out.stdout.count("skipped: backend.device=cuda:7: CUDA is not available") == 3  # the torch cells
    assert out.stdout.count(" skipped: ") == len(SMOKE_CELLS)  # the other backends run on the CPU only


def test_cells_of_a_backend_not_installed_are_skipped_with_the_reason(qbench_cache, tmp_path) -> None:
    # openvino's and executorch's packages made unfindable (a None entry in sys.modules: find_spec answers None)
    hide = ("import sys; sys.modules.update(dict.fromkeys(('openvino', 'nncf', 'executorch', 'torchao'))); "
            "sys.argv[0] = 'qbench'; from qbench.cli import entry; entry()")
    env = {**os.environ, "QBENCH_CACHE": str(qbench_cache), "COLUMNS": "400"}
    out = subprocess.run([sys.executable, "-c", hide, "run", "+suite=smoke", "suite.dry_run=true"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert _cells(out.stdout) and set(_cells(out.stdout)) == SMOKE_CELLS
    lines = {line.split()[1]: line for line in out.stdout.splitlines() if line.strip()[:1].isdigit() and ". " in line}
    for cell, line in lines.items():
        backend = cell.rsplit("/", 1)[1]
        if backend in ("openvino", "executorch"):  # the extra is named after the backend
            assert line.endswith(f'not installed (pip install -e ".[{backend}]")'), line
        else:
            assert " skipped: " not in line, line


def test_bad_value_in_a_suite_stops_before_any_cell(run_qbench, tmp_path) -> None:
    out = run_qbench("run", "+suite=smoke", "quant.weights.bits=1")
    assert out.returncode == 2
    assert "quant.weights.bits=1: must be an integer in 2..16" in out.stdout + out.stderr
    assert not list(tmp_path.glob("results/suites/*/*/run-*/cells/*/record.json"))


@pytest.mark.parametrize("narrowed", [
    pytest.param(True, id="base-backends"),
    # every backend of the suite, openvino and executorch where installed: ~1 min more (the nightly's suite)
    pytest.param(False, id="every-backend", marks=pytest.mark.slow),
])
def test_smoke_suite_logs_one_parent_with_a_child_per_cell(run_qbench, tmp_path, narrowed) -> None:
    narrow = (SMOKE_BASE,) if narrowed else ()
    out = run_qbench("run", "+suite=smoke", *narrow)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    records = _suite_records(tmp_path, "smoke")
    expected = SMOKE_BASE_CELLS if narrowed else SMOKE_CELLS
    assert set(records) == expected
    # the cells a backend cannot run here (no kernel for the scheme, or its extra not installed) are skipped with
    # the reason; all others finish
    skips = smoke_skip_reasons(expected)
    assert {c: r["error"][:len(skips[c])] for c, r in records.items() if r["status"] == "skipped"} == skips
    assert all(r["status"] == "finished" for c, r in records.items() if c not in skips)
    n, k = len(expected), len(skips)
    assert f"{n} cells: {n - k} finished, 0 failed, {k} skipped" in out.stdout

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/results/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("qbench").experiment_id])
    parents = [r for r in runs if r.data.tags.get("qbench.role") == "suite"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.data.tags["qbench.suite"] == "smoke" and parent.info.status == "FINISHED"
    assert {"qbench.git_sha", "qbench.host_id", "qbench.started_at"} <= set(parent.data.tags)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.run_name for r in children) == sorted(records)  # skipped cells too
    # the nightly suite runs real integer kernels, not only the simulation: the W8A8 cell of every real backend
    # that runs here is an int8 child run
    ran = {c.rsplit("/", 1)[1] for c in expected if c not in skips}
    assert {r.data.tags.get("kernel") for r in children} >= {"fp32", "simulated", "int8"}
    assert {r.info.run_name for r in children if r.data.tags.get("kernel") == "int8"} >= {
        f"digits_cnn/w8a8-pc/{b}" for b in ran - {"torch"}}
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"summary.csv", "summary.md"}
    # speed-up and deltas are computed against the FP32 cell of the same run
    summary = (Path(next(iter(records.values()))["_path"]).parents[2] / "summary.csv").read_text()
    assert "digits_cnn/fp32/torch,finished,fp32" in summary

    again = run_qbench("run", "+suite=smoke", *narrow)  # resume: nothing left to do
    assert again.returncode == 0 and f"{n} already finished in this suite run" in again.stdout
    assert _suite_records(tmp_path, "smoke") == records


def test_a_hard_crash_is_recorded_and_the_suite_goes_on(run_qbench, tmp_path) -> None:
    out = run_qbench("run", "+suite=smoke", SMOKE_TORCH, "debug.fault=abort", "debug.fault_on=*w8a8*",
                     "tracking=none")
    assert out.returncode == 1  # a cell failed
    records = _suite_records(tmp_path, "smoke")
    crashed = records["digits_cnn/w8a8-pc/torch"]
    assert crashed["status"] == "failed" and "SIGABRT" in crashed["error"]
    assert records["digits_cnn/fp32/torch"]["status"] == "finished"
    assert records["digits_cnn/w4-wo-pg32/torch"]["status"] == "finished"
    assert "1 failed" in out.stdout



def test_a_reference_model_that_fails_to_train_fails_its_cells_and_the_suite_goes_on(run_qbench, tmp_path) -> None:
    out = run_qbench("run", "+suite=smoke", SMOKE_TORCH, "model=digits_cnn,resnet18", "quant=fp32,w8a8_pc",
                     "debug.fault=prepare",
                     "debug.fault_on=resnet18/*")
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    records = _suite_records(tmp_path, "smoke")
    assert len(records) == 4
    for scheme in ("fp32", "w8a8-pc"):
        assert records[f"digits_cnn/{scheme}/torch"]["status"] == "finished"
        failed = records[f"resnet18/{scheme}/torch"]
        assert failed["status"] == "failed"
        assert failed["error"] == "reference model: training the reference model resnet18 failed (exit 1)"
    (state_path,) = tmp_path.glob("results/suites/smoke/*/state.json")
    assert json.loads(state_path.read_text())["status"] == "complete"

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/results/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("qbench").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("qbench.role") == "suite"]
    assert parent.info.status == "FAILED"  # closed, with a failed cell
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.run_name for r in children) == sorted(records)

@pytest.mark.slow  # 20-60 s: keeps the default run near 15 min on 2 cores (pytest -m slow runs it)
def test_a_hanging_cell_times_out(run_qbench, tmp_path) -> None:
    out = run_qbench("run", "+suite=smoke", SMOKE_TORCH, "quant=w4_wo", "debug.fault=hang", "debug.fault_on=*w4*",
                     "measure.timeout_s=20", "tracking=none")
    assert out.returncode == 1
    record = _suite_records(tmp_path, "smoke")["digits_cnn/w4-wo-pg32/torch"]
    assert record["status"] == "failed" and record["error"].startswith("timeout")


def test_kill_9_midway_then_resume_runs_only_missing_cells(qbench_cache, tmp_path) -> None:
    env = {**os.environ, "QBENCH_CACHE": str(qbench_cache)}
    cmd = [sys.executable, "-m", "qbench", "run", "+suite=vision", "model=digits_cnn", "quant=fp32,w8a8,w8a8_pc,w4_wo",
           "backend=torch", "tracking=none"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            done = [r for r in _suite_records(tmp_path, "vision").values() if r["status"] == "finished"]
            if len(done) >= 2:
                break
            assert proc.poll() is None, "suite ended before it could be killed"
            time.sleep(0.2)
        else:
            pytest.fail("no cell finished in time")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = {name: r for name, r in _suite_records(tmp_path, "vision").items() if r["status"] == "finished"}
    assert 2 <= len(before) < 4
    mtimes = {name: os.stat(r["_path"]).st_mtime_ns for name, r in before.items()}

    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:]
    assert f"{len(before)} already finished in this suite run" in out.stdout
    after = _suite_records(tmp_path, "vision")
    assert len(after) == 4 and all(r["status"] == "finished" for r in after.values())
    for name, mtime in mtimes.items():  # finished cells were not run again
        assert os.stat(after[name]["_path"]).st_mtime_ns == mtime


# ---------------------------------------------------------------------------- a worker dies with its orchestrator
def test_the_worker_is_spawned_without_a_preexec_fn(compose, tmp_path, monkeypatch) -> None:
    """A preexec_fn runs Python in the forked child, which is unsafe while the orchestrator runs threads: the
    worker is told its orchestrator's pid and ties its life to it itself."""
    from qbench import config as qconfig
    from qbench.orchestrate import runner

    seen: dict = {}

    class FakeWorker:
        returncode = 0

        def poll(self) -> int:
            return 0

    def popen(args: list[str], **kwargs: object) -> object:
        seen.update(kwargs)
        return FakeWorker()

    cfg = qconfig.validate(compose("measure=quick", "suite.fork_server=false"))  # the fork server: its own tests
    monkeypatch.setattr(subprocess, "Popen", popen)
    result = runner.spawn_worker(cfg, tmp_path, "0" * 16)
    assert result.status == "failed"  # the fake wrote no result
    assert seen.get("preexec_fn") is None
    assert seen["env"]["QBENCH_PARENT_PID"] == str(os.getpid())


def test_the_worker_dies_when_its_orchestrator_is_killed(qbench_cache, tmp_path) -> None:
    import psutil

    env = {**os.environ, "QBENCH_CACHE": str(qbench_cache)}
    proc = subprocess.Popen([sys.executable, "-m", "qbench", "run", "debug.fault=hang", "measure=quick",
                             "tracking=none"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # until the worker is past its start-up, hanging in the cell
            logs = list(tmp_path.glob("results/runs/*/worker.log"))
            if logs and "loading data" in logs[0].read_text():
                break
            assert proc.poll() is None, "qbench run ended before the worker hung"
            time.sleep(0.2)
        else:
            pytest.fail("the worker did not start in time")
        # the cell's process and, with suite.fork_server (the default), the server it was forked from
        workers = [p for p in psutil.Process(proc.pid).children(recursive=True)
                   if "qbench.worker" in " ".join(p.cmdline())]
        assert workers
        os.kill(proc.pid, signal.SIGKILL)  # the orchestrator only, not its process group
        proc.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if all(_gone(worker) for worker in workers):
                break
            time.sleep(0.1)
        else:
            pytest.fail("the worker outlived its orchestrator")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def _gone(process: object) -> bool:
    import psutil

    try:
        return process.status() == psutil.STATUS_ZOMBIE  # type: ignore[attr-defined]
    except psutil.NoSuchProcess:
        return True


def test_a_worker_whose_orchestrator_is_already_gone_exits_at_once(tmp_path) -> None:
    """The orchestrator died between spawning the worker and the worker asking for its death signal."""
    env = {**os.environ, "QBENCH_PARENT_PID": str(os.getppid())}  # not the worker's parent (this process)
    out = subprocess.run([sys.executable, "-m", "qbench.worker", str(tmp_path / "cell")], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 3 and "is gone" in out.stderr, out.stderr[-2000:]


def test_a_sweep_over_one_backends_setting_leaves_the_other_backends_cells_alone(run_qbench) -> None:
    out = run_qbench("run", "+suite=smoke", "quant=fp32", "backend=torch,onnxruntime",
                     "backend.graph_optimization_level=disable,all", "suite.dry_run=true")
    assert out.returncode == 0, out.stderr
    assert sorted(_cells(out.stdout)) == ["digits_cnn/fp32/onnxruntime", "digits_cnn/fp32/onnxruntime/opt-disable",
                                          "digits_cnn/fp32/torch"]
