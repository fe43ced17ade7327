"""``qbench ui``: the MLflow UI on the local store, on 127.0.0.1:PORT, stopped cleanly by Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


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
    process = subprocess.Popen([sys.executable, "-m", "qbench", "ui", "--port", str(port)], cwd=store.parent.parent,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    started: list[psutil.Process] = []
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stdout.read()
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
