"""``qbench ui``: the MLflow UI on the local store, bound to 127.0.0.1, in the foreground until Ctrl-C; it prints
(and with ``--open`` opens) the latest suite run's runs table as :mod:`qbench.track.ui_view` lays it out."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from types import FrameType

from qbench.report.columns import ReportError
from qbench.track.uri import SQLITE, require_store

HOST = "127.0.0.1"


def local_store(uri: str) -> tuple[str, Path]:
    """The absolute URI and database file of an existing local store; ReportError for a server,
    :class:`qbench.track.uri.NoStore` when the store is missing."""
    path = require_store(uri)
    if path is None:
        raise ReportError(f"--tracking-uri {uri}: qbench ui serves a local store (sqlite:///PATH); a tracking "
                          "server already has its own UI at its URL")
    return SQLITE + str(path), path


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as the server will: a port whose last connections linger in TIME_WAIT is free, a listening one is not
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def ui_command(uri: str, port: int, artifacts: Path) -> list[str]:
    """The ``mlflow ui`` command line: one worker (a local viewer, not a shared server)."""
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", HOST, "--port", str(port),
            "--workers", "1", "--artifacts-destination", artifacts.as_uri()]


def _group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is left in process group ``pgid``."""
    import psutil

    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, PermissionError):
            continue
    return False


def _stop(process: subprocess.Popen, timeout_s: float = 15.0) -> None:
    """Stop the server and every process it started (its own process group): SIGTERM, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None and not _group_alive(process.pid):
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def start_pages(uri: str, base: str, experiment: str) -> list[tuple[str, str]]:
    """What to open first, as (label, URL): the latest suite run's runs table and its charts, else the
    experiment's runs page, else the UI's home. Stores the suite's shared view when it lacks one."""
    from qbench.track.mlflow_tracker import client_for, mark_model_training
    from qbench.track.ui_view import latest_suite_view, run_url, runs_url

    client = client_for(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return [(f"no experiment {experiment!r} in this store yet; the UI", base + "/")]
    mark_model_training(client, found)
    latest = latest_suite_view(client, found.experiment_id)
    if latest is None:
        return [(f"runs of experiment {experiment!r} (no suite run yet)", runs_url(base, found.experiment_id))]
    parent, key = latest
    what = f"{parent.info.run_name}, {parent.data.tags.get('qbench.cells', '?')} cells"
    return [(f"latest suite run ({what})", runs_url(base, found.experiment_id, key)),
            ("its charts (accuracy vs latency)", runs_url(base, found.experiment_id, key, charts=True)),
            ("its summary (the parent run)", run_url(base, found.experiment_id, parent.info.run_id))]


def _open_when_up(url: str, base: str, timeout_s: float = 120.0) -> None:
    """Open ``url`` in the browser once the server at ``base`` answers (it takes a few seconds to start)."""
    import webbrowser

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/health", timeout=2):
                webbrowser.open(url)
                return
        except OSError:
            time.sleep(0.5)


def serve(uri: str, port: int, experiment: str = "qbench", open_browser: bool = False) -> int:
    """Run the MLflow UI on ``HOST:port`` for the local store ``uri`` until Ctrl-C (or SIGTERM); print the
    latest suite run's runs-table URL and, with ``open_browser``, open it."""
    uri, path = local_store(uri)
    if not port_is_free(port):
        raise ReportError(f"--port {port}: {HOST}:{port} is already in use (choose another with --port)")
    # the job runner (GenAI evaluation jobs) is of no use to qbench and costs a handful of processes
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    base = f"http://{HOST}:{port}"
    print(f"MLflow UI: {base}   store: {path}   (Ctrl-C to stop)", flush=True)
    try:
        pages = start_pages(uri, base, experiment)
    except Exception as exc:  # a store qbench cannot read as expected still gets its UI
        pages = [(f"(could not find the latest suite run: {str(exc).strip()[:200]}) the UI", base + "/")]
    for label, url in pages:
        print(f"{label}: {url}", flush=True)
    # own session: the server's workers are stopped as one group, and a terminal's Ctrl-C reaches qbench only
    process = subprocess.Popen(ui_command(uri, port, path.parent / "mlartifacts"), env=env, start_new_session=True)
    if open_browser:
        threading.Thread(target=_open_when_up, args=(pages[0][1], base), daemon=True).start()

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    # Ctrl-C must stop the UI even when qbench was started with SIGINT ignored (an ignored signal is inherited
    # across exec, e.g. from a fork server's process)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return process.wait()
    except KeyboardInterrupt:
        print("\nstopping the MLflow UI", flush=True)
        _stop(process)
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        if process.poll() is None or _group_alive(process.pid):
            _stop(process)
