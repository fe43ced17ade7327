"""``qbench ui``: the MLflow UI on the local store, on 127.0.0.1:PORT, stopped cleanly by Ctrl-C; the URL it prints
opens the latest suite run's runs table (checked in headless Chromium); what the runs describe (the parent's
summary table, each cell's one-line finding) and the shared view that lays the table out."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from suite_cells import SMOKE_TORCH, SMOKE_TORCH_CELLS


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, data: dict | None = None) -> tuple[int, str]:
    body = json.dumps(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read().decode()


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    """A local store with one experiment and one named run (what qbench logs, in miniature)."""
    import mlflow

    (tmp_path / "results").mkdir()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/results/mlflow.db")
    experiment = client.create_experiment("qbench", artifact_location=(tmp_path / "results/mlartifacts").as_uri())
    run = client.create_run(experiment, run_name="digits_cnn/w8a8-pc/torch")
    client.log_metric(run.info.run_id, "acc.top1", 0.98)
    client.set_terminated(run.info.run_id)
    return tmp_path / "results" / "mlflow.db"


def test_ui_serves_the_store_on_localhost_and_stops_on_ctrl_c(store: Path, qbench_cache: Path) -> None:
    import psutil

    port = _free_port()
    # a file, not a pipe nobody reads: the MLflow server's log shares qbench's stdout, and a full pipe would block
    # both (qbench's "stopping" line included) until the test gives up
    log = store.parent.parent / "ui.log"
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "qbench", "ui", "--port", str(port)],
                                   cwd=store.parent.parent, stdout=out, stderr=subprocess.STDOUT, text=True,
                                   start_new_session=True)
    started: list[psutil.Process] = []
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log.read_text()
            try:
                status, page = _get(base + "/")
                break
            except OSError:
                assert time.monotonic() < deadline, "the MLflow UI did not answer within 120 s"
                time.sleep(0.5)
        assert status == 200 and "<title>MLflow</title>" in page
        _, found = _get(base + "/api/2.0/mlflow/experiments/get-by-name?experiment_name=qbench")
        experiment_id = json.loads(found)["experiment"]["experiment_id"]
        _, runs = _get(base + "/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment_id]})
        assert [r["info"]["run_name"] for r in json.loads(runs)["runs"]] == ["digits_cnn/w8a8-pc/torch"]
        started = psutil.Process(process.pid).children(recursive=True)
        assert started  # the server runs as qbench's child
        process.send_signal(signal.SIGINT)  # what Ctrl-C sends to the foreground process (qbench)
        assert process.wait(timeout=60) == 0
        time.sleep(0.5)
        alive = [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not alive, f"left running: {[p.cmdline() for p in alive]}"
        with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
            sock.connect(("127.0.0.1", port))  # nothing listens any more
    finally:
        for proc in [psutil.Process(process.pid), *started] if process.poll() is None else started:
            if proc.is_running():
                os.kill(proc.pid, signal.SIGKILL)


def test_ui_without_a_store_is_one_line_exit_2(run_qbench, tmp_path: Path) -> None:
    out = run_qbench("ui", "--port", str(_free_port()))
    assert out.returncode == 2
    err = out.stderr.strip()
    assert err.startswith("qbench ui: no MLflow store at") and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "results").exists()


def test_ui_port_in_use_is_one_line_exit_2(store: Path, run_qbench) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        out = run_qbench("ui", "--port", str(busy.getsockname()[1]), cwd=store.parent.parent)
    assert out.returncode == 2 and "is already in use" in out.stderr and out.stderr.strip().count("\n") == 0


# ------------------------------------------------------------------------------------------ descriptions
def _cell(status: str = "finished", **fields: object) -> dict:
    base = {"status": status, "cell": "resnet18/w8a8-pc/onnxruntime", "error": None, "config": {},
            "metrics": {"acc.top1": 0.9761, "acc.delta_top1": -0.0028, "latency.p50_ms": 0.8213},
            "tags": {"kernel": "int8", "task.metric": "acc.top1", "latency.unstable": "false"}}
    return {**base, **fields}


def test_a_cells_description_is_one_line_of_its_findings() -> None:
    from qbench.track.notes import cell_note

    assert cell_note(_cell()) == "int8 · top-1 97.61 % (Δ FP32 -0.28 pt) · p50 0.821 ms"
    # at the end of the suite: the figures relative to the suite's FP32 reference cell
    assert cell_note(_cell(), speedup=1.634, delta_pt=-0.3) == (
        "int8 · top-1 97.61 % (Δ FP32 -0.30 pt) · 1.63x speed-up vs FP32 · p50 0.821 ms")
    simulated = _cell(tags={"kernel": "simulated", "latency.unstable": "true"})
    assert cell_note(simulated) == ("simulated · top-1 97.61 % (Δ FP32 -0.28 pt) · no speed-up (simulated kernel: "
                                    "float latency) · p50 0.821 ms · latency unstable")
    gap = _cell(metrics={"acc.top1": 0.9472, "acc.top1_simulated": 0.9972, "acc.gap_top1": -0.05,
                         "acc.agreement_simulated": 0.951})
    line = cell_note(gap, speedup=1.6)
    assert line.startswith("⚠ deployment gap -5.00 pt vs simulation · int8 · top-1 94.72 %")
    assert "deployed 94.72 % vs simulated 99.72 %" in line and "\n" not in line
    assert cell_note(_cell("skipped", error="4-bit weights need a 4-bit kernel")) == (
        "skipped: 4-bit weights need a 4-bit kernel")
    assert cell_note(_cell("failed", error="worker crashed:\nkilled by signal SIGSEGV")) == (
        "failed: worker crashed: killed by signal SIGSEGV")
    text = _cell(metrics={"lm.perplexity": 21.5, "lm.delta_perplexity_pct": 3.2},
                 tags={"kernel": "int4", "task.metric": "lm.perplexity",
                       "task.delta_metric": "lm.delta_perplexity_pct"})
    assert cell_note(text).startswith("int4 · ppl 21.500 (Δ ppl % +3.20)")


def test_the_suites_description_is_its_summary_table_with_the_report_link() -> None:
    from qbench.track.notes import NOTE_MAX, suite_note

    rows = [{"cell": "digits_cnn/fp32/torch", "status": "finished", "kernel": "fp32", "top1": 0.9861,
             "delta_fp32_pt": 0.0, "p50_ms": 0.41, "speedup": 1.0, "flags": "", "note": ""},
            {"cell": "digits_cnn/w8a8-pc/torch_int8", "status": "finished", "kernel": "int8", "top1": 0.9472,
             "delta_fp32_pt": -3.89, "p50_ms": 0.2, "speedup": 2.05, "flags": "gap", "note": "latency unstable"},
            {"cell": "digits_cnn/w4a8-pc/torch_int8", "status": "skipped", "kernel": "", "top1": None,
             "delta_fp32_pt": None, "p50_ms": None, "speedup": None, "flags": "", "note": "no 4-bit | kernel"}]
    note = suite_note("smoke", rows, "#/experiments/1/runs/abc/artifacts/report/report.html")
    lines = note.splitlines()
    assert lines[0] == ("suite smoke: 3 cells, 2 finished, 0 failed, 1 skipped · full report with plots: "
                        "[report.html](#/experiments/1/runs/abc/artifacts/report/report.html)")
    assert lines[2] == "| cell | status | kernel | top-1 % | Δ FP32 pt | p50 ms | speed-up | flags / note |"
    assert lines[4] == "| digits_cnn/fp32/torch | finished | fp32 | 98.61 | +0.00 | 0.410 | 1.00x |  |"
    assert lines[5].endswith("| 94.72 | -3.89 | 0.200 | 2.05x | ⚠ gap; latency unstable |")
    assert lines[6] == "| digits_cnn/w4a8-pc/torch_int8 | skipped |  | — | — | — | — | no 4-bit \\| kernel |"
    many = suite_note("vision", rows[:1] * 200)
    assert len(many) <= NOTE_MAX and many.endswith("more cells: see the report")


def test_the_shared_view_filters_the_suite_and_selects_the_key_columns() -> None:
    from qbench.track.ui_view import runs_url, view_state

    state = view_state("p123")
    assert state["searchFilter"] == "tags.`qbench.suite_run` = 'p123'"
    # sorted by something else than the start time, a filtered table shows parent and cells as flat rows
    assert state["orderByKey"] == "tags.`mlflow.runName`" and state["orderByAsc"] is True
    assert state["selectedColumns"][:3] == ["attributes.`Description`", "tags.`qbench.status`", "tags.`kernel`"]
    assert {"metrics.`acc.top1`", "metrics.`vs_fp32.speedup`", "metrics.`acc.gap_top1`",
            "metrics.`size.artifact_bytes`"} <= set(state["selectedColumns"])
    assert view_state("p123", tagged=False)["searchFilter"] == "tags.`mlflow.parentRunId` = 'p123'"
    assert runs_url("http://h:1", "7", "k") == (
        "http://h:1/#/experiments/7/runs?viewStateShareKey=k&workflowType=machine_learning")


# ------------------------------------------------------------------------- the printed URL, in Chromium
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1600,1000")


def _render(url: str, profile: Path, budget_ms: int = 20000) -> str:
    """The DOM of ``url`` after ``budget_ms`` of virtual time in headless Chromium (a fresh profile each time)."""
    shutil.rmtree(profile, ignore_errors=True)
    out = subprocess.run(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                          f"--virtual-time-budget={budget_ms}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=180)
    return out.stdout


def _text(dom: str) -> str:
    """The page's visible text, one space between elements."""
    import html

    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom)))


@pytest.mark.slow  # 20-60 s: keeps the default run near 15 min on 2 cores (pytest -m slow runs it)
@pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium is not installed (apt-get install chromium)")
def test_the_printed_url_shows_the_suites_cells_and_their_top1(run_qbench, tmp_path: Path) -> None:
    import mlflow

    out = run_qbench("run", "+suite=smoke", SMOKE_TORCH)  # the UI's view of a suite, not the suite's backends
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "qbench", "ui", "--port", str(port)], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        printed = [process.stdout.readline() for _ in range(4)]
        threading.Thread(target=process.stdout.read, daemon=True).start()  # keep the pipe drained (server log)
        runs_line = next(line for line in printed
                         if line.startswith(f"latest suite run (suite:smoke, {len(SMOKE_TORCH_CELLS)} cells): "))
        url = runs_line.split(": ", 1)[1].strip()
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, "".join(printed) + process.stdout.read()
            try:
                _get(f"http://127.0.0.1:{port}/health")
                break
            except OSError:
                assert time.monotonic() < deadline, "the MLflow UI did not answer within 120 s"
                time.sleep(0.5)
        client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/results/mlflow.db")
        runs = client.search_runs([client.get_experiment_by_name("qbench").experiment_id])
        parent = next(r for r in runs if r.data.tags.get("qbench.role") == "suite")
        cells = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
        assert set(cells) == SMOKE_TORCH_CELLS

        page = _text(_render(url, tmp_path / "profile"))
        assert "Model training" in page and "You're viewing a shared view" in page
        # parent and cells, no row folded away
        assert f"{len(SMOKE_TORCH_CELLS) + 1} matching runs" in page and "suite:smoke" in page
        for name, run in cells.items():
            top1 = run.data.metrics["acc.top1"]
            assert name in page
            assert f"top-1 {top1 * 100:.2f} %" in page and repr(top1) in page  # the description, the column
        # a cell's page: its one-line finding; its Duration is the cell's wall
        name, run = next(iter(cells.items()))
        assert abs((run.info.end_time - run.info.start_time) / 1000 - run.data.metrics["time.worker_wall_s"]) < 0.01
        base = url.split("#", 1)[0]
        cell_page = _text(_render(f"{base}#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}",
                                  tmp_path / "profile"))
        assert run.data.tags["mlflow.note.content"] in cell_page
        # the parent's page: the summary table, one row per cell, and the link to the report
        summary_line = next(line for line in printed if line.startswith("its summary (the parent run): "))
        assert f"#/experiments/{parent.info.experiment_id}/runs/{parent.info.run_id}?" in summary_line
        dom = _render(summary_line.split(": ", 1)[1].strip(), tmp_path / "profile")
        table = dom.split("<table", 1)[1].split("</table>", 1)[0]
        assert all(f">{name}</td>" in table for name in cells)
        assert f"runs/{parent.info.run_id}/artifacts/report/report.html" in dom
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def test_open_opens_the_printed_url_once_the_server_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    import contextlib
    import webbrowser

    from qbench.report import ui

    opened: list[str] = []
    asked: list[str] = []

    def urlopen(url: str, timeout: float) -> contextlib.AbstractContextManager:
        asked.append(url)
        if len(asked) < 3:
            raise OSError("connection refused")  # still starting
        return contextlib.nullcontext()

    monkeypatch.setattr(webbrowser, "open", opened.append)
    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    monkeypatch.setattr(ui.time, "sleep", lambda s: None)
    ui._open_when_up("http://127.0.0.1:1/#/experiments/1/runs?x=y", "http://127.0.0.1:1")
    assert opened == ["http://127.0.0.1:1/#/experiments/1/runs?x=y"] and asked == ["http://127.0.0.1:1/health"] * 3


def test_suite_runs_logged_before_views_existed_get_one(tmp_path: Path) -> None:
    """``qbench ui`` on an older store: the latest suite run gets its shared view; without the suite-run tag on
    its cells the view filters on the parent id (cells only), with it the parent is tagged too."""
    import mlflow

    from qbench.track.ui_view import VIEW_TAG_PREFIX, latest_suite_view

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.create_experiment("qbench")
    old = client.create_run(experiment, run_name="suite:smoke", tags={"qbench.role": "suite"}).info.run_id
    client.create_run(experiment, run_name="digits_cnn/fp32/torch", tags={"mlflow.parentRunId": old})
    parent, key = latest_suite_view(client, experiment)
    assert parent.info.run_id == old and key == f"qbench-suite-{old}"
    state = json.loads(client.get_experiment(experiment).tags[VIEW_TAG_PREFIX + key])
    assert state["searchFilter"] == f"tags.`mlflow.parentRunId` = '{old}'"

    time.sleep(0.01)  # a later suite run whose cells carry the tag (logged by this qbench), its parent not yet
    new = client.create_run(experiment, run_name="suite:smoke", tags={"qbench.role": "suite"}).info.run_id
    client.create_run(experiment, run_name="digits_cnn/fp32/torch",
                      tags={"mlflow.parentRunId": new, "qbench.suite_run": new})
    parent, key = latest_suite_view(client, experiment)
    assert parent.info.run_id == new and client.get_run(new).data.tags["qbench.suite_run"] == new
    state = json.loads(client.get_experiment(experiment).tags[VIEW_TAG_PREFIX + key])
    assert state["searchFilter"] == f"tags.`qbench.suite_run` = '{new}'"
