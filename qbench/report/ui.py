"""``qbench ui``: the MLflow UI on the local store, bound to 127.0.0.1, in the foreground until Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
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


def serve(uri: str, port: int) -> int:
    """Run the MLflow UI on ``HOST:port`` for the local store ``uri`` until Ctrl-C (or SIGTERM)."""
    uri, path = local_store(uri)
    if not port_is_free(port):
        raise ReportError(f"--port {port}: {HOST}:{port} is already in use (choose another with --port)")
    # the job runner (GenAI evaluation jobs) is of no use to qbench and costs a handful of processes
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    print(f"MLflow UI: http://{HOST}:{port}   store: {path}   (Ctrl-C to stop)", flush=True)
    # own session: the server's workers are stopped as one group, and a terminal's Ctrl-C reaches qbench only
    process = subprocess.Popen(ui_command(uri, port, path.parent / "mlartifacts"), env=env, start_new_session=True)

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
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
