"""The orchestrating side of a cell: capability check, one-time preparation, the cell's own process,
the local record, then MLflow. Runs inside Hydra's task function, so any Hydra launcher can run it.

Each cell's measurements run in a process of their own, so peak RSS, thread pools and crashes cannot leak
between cells: a fresh fork of the fork server (:mod:`qbench.orchestrate.forkserver`, ``suite.fork_server``,
default on Linux), which has imported torch but run nothing, or a freshly *spawned* interpreter
(``python -m qbench.worker``) where the server is off or cannot start.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from qbench import config as qconfig
from qbench.config.threads import PARENT_PID_ENV, PRELOAD_ENV, worker_env
from qbench.record import CellResult, make_record, write_record

log = logging.getLogger("qbench")


@dataclass
class CellOutcome:
    """What the orchestrator learned about one cell (returned to sweepers and summaries)."""

    record: dict[str, Any]
    record_path: Path | None
    reused: bool = False


# ----------------------------------------------------------------------------------------- preparation
def ensure_reference_model(cfg: qconfig.QBenchConfig, workdir: Path) -> None:
    """Train the cell's reference model once (in its own spawned process, under a file lock) if needed."""
    from qbench.zoo import cache

    if cfg.model.source != "reference":
        return
    if cache.is_cached(cfg.model, cfg.dataset) and not qconfig.fault_injected(cfg, "prepare"):
        return
    log.info("reference model %s is not cached yet: training it once (%s)", cfg.model.name, cache.reference_dir(
        cfg.model, cfg.dataset))
    proc = subprocess.run([sys.executable, "-m", "qbench.worker", "--prepare", str(workdir)], env=_worker_env(cfg))
    if proc.returncode != 0 or not cache.is_cached(cfg.model, cfg.dataset):
        raise RuntimeError(f"training the reference model {cfg.model.name} failed (exit {proc.returncode})")


# ---------------------------------------------------------------------------------------------- worker
def _worker_env(cfg: qconfig.QBenchConfig) -> dict[str, str]:
    # the worker ties its life to this process itself (qbench.worker.die_with_parent): a preexec_fn doing it
    # in the forked child is unsafe while this process runs threads (the progress display, MLflow)
    return {**worker_env(cfg, dict(os.environ)), PARENT_PID_ENV: str(os.getpid())}


# modules every cell of a model source imports (transformers with torchao: ~3.5 s here)
SOURCE_PRELOAD = {"hf": ("transformers.modeling_utils",)}


def preload_modules(cfg: qconfig.QBenchConfig) -> tuple[str, ...]:
    """What this cell imports anyway beyond the worker's own modules (its model source's library, its backend's
    runtime): its fork server imports them once instead of every cell. Only what the cell itself would import:
    a forked child's memory is the server's, and its peak RSS must stay what a spawned worker's is, which a
    server preloading for other cells would inflate (a test compares the two)."""
    from qbench.backends import get_backend

    return (*SOURCE_PRELOAD.get(cfg.model.source, ()), *get_backend(cfg.backend.name).preload)


def _fork_env(cfg: qconfig.QBenchConfig) -> dict[str, str]:
    """The environment of the cell's fork server (its key: cells that need other preloads get another server)."""
    preload = preload_modules(cfg)
    return {**_worker_env(cfg), **({PRELOAD_ENV: ",".join(preload)} if preload else {})}


def _start_worker(cfg: qconfig.QBenchConfig, cell_dir: Path, log_file: Any) -> Any:
    """A forked cell (``suite.fork_server``) or, where that is off or unavailable, a spawned interpreter; both
    answer ``poll``/``kill``/``wait``/``returncode`` like ``subprocess.Popen``."""
    if cfg.suite.fork_server:
        from qbench.orchestrate.forkserver import fork_cell

        forked = fork_cell([str(cell_dir)], _fork_env(cfg), log_file)
        if forked is not None:
            return forked
    return subprocess.Popen([sys.executable, "-m", "qbench.worker", str(cell_dir)], stdout=log_file,
                            stderr=subprocess.STDOUT, env=_worker_env(cfg))


def prestart_fork_server(cfg: qconfig.QBenchConfig) -> None:
    """Start the fork server for this cell's environment now, so its imports overlap the orchestrator's work."""
    if cfg.suite.fork_server:
        from qbench.orchestrate.forkserver import prestart

        prestart(_fork_env(cfg))


def spawn_worker(
    cfg: qconfig.QBenchConfig, cell_dir: Path, cell_hash: str, on_wait: Callable[[], None] | None = None
) -> CellResult:
    """Run the cell in a process of its own; a crash, non-zero exit or timeout becomes a failed result."""
    log_path = cell_dir / "worker.log"
    result_path = cell_dir / "result.json"
    result_path.unlink(missing_ok=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    timeout = cfg.measure.timeout_s
    with open(log_path, "w") as log_file:
        proc = _start_worker(cfg, cell_dir, log_file)
        deadline = time.monotonic() + timeout
        error = None
        try:
            while proc.poll() is None:
                if time.monotonic() > deadline:
                    proc.kill()
                    proc.wait()
                    error = f"timeout: the worker ran longer than measure.timeout_s={timeout:g}s and was killed"
                    break
                if on_wait:
                    on_wait()
                time.sleep(0.2)
        except BaseException:  # Ctrl-C or the orchestrator being stopped: take the worker down too
            proc.kill()
            proc.wait()
            raise
    code = proc.returncode
    how = {"worker.start": "fork" if getattr(proc, "forked", False) else "spawn"}  # how the cell's process began
    if error is None and result_path.is_file():
        import json

        result = CellResult.from_json(json.loads(result_path.read_text()))
        result.tags.update(how)
        return result
    if error is None:
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            error = f"worker crashed: killed by signal {name}"
            if getattr(proc, "lost", False):
                error += " (its fork server exited)"
        else:
            error = f"worker exited with code {code} without a result"
    tail = _tail(log_path)
    return CellResult(
        status="failed", cell=qconfig.cell_name(cfg), cell_hash=cell_hash,
        error=error + (f"; last log lines: {tail}" if tail else ""),
        started_at=started, ended_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        artifacts=[str(log_path)], tags=how,
    )


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


# --------------------------------------------------------------------------------------------- tracking
def track(record: dict[str, Any], record_path: Path, cfg: qconfig.QBenchConfig, parent_run_id: str | None) -> None:
    """Log the record to MLflow and mark it synced; on failure keep it local and say how to sync."""
    if not cfg.tracking.enabled:
        return
    from qbench.track.mlflow_tracker import log_record
    from qbench.track.uri import resolve_uri

    try:
        run_id = _with_retries(lambda: log_record(record, cfg.tracking, Path(cfg.results_dir), parent_run_id))
    except Exception as exc:  # a down server must not lose the result: it stays in the local record
        record["tracking"].update(synced=False, error=qconfig.one_line(exc)[:500])
        write_record(record_path.parent, record)
        log.warning("MLflow logging failed (%s); the record is kept in %s", qconfig.one_line(exc)[:200], record_path)
        return
    record["tracking"].update(
        synced=True, run_id=run_id, uri=resolve_uri(cfg.tracking.uri), experiment=cfg.tracking.experiment,
        parent_run_id=parent_run_id, error=None,
    )
    write_record(record_path.parent, record)


def _with_retries(call: Callable[[], str], attempts: int = 5) -> str:
    """Retry a tracking call while SQLite reports a concurrent writer (parallel cells on one store)."""
    for attempt in range(attempts):
        try:
            return call()
        except Exception as exc:
            if "database is locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


# ------------------------------------------------------------------------------------------------ a cell
def run_cell_job(
    cfg_node: DictConfig,
    cell_dir: Path,
    *,
    suite: dict[str, Any] | None = None,
    parent_run_id: str | None = None,
    on_wait: Callable[[], None] | None = None,
) -> CellOutcome:
    """Run one validated cell end to end: capability check, preparation, worker, record, MLflow."""
    cfg = qconfig.validate(cfg_node)
    config = qconfig.cell_config_dict(cfg_node)
    cell_hash = qconfig.cell_hash(config)
    cell_dir.mkdir(parents=True, exist_ok=True)
    from qbench.orchestrate.preflight import unsupported_reason

    reason = unsupported_reason(cfg)
    if reason:
        result = CellResult(status="skipped", cell=qconfig.cell_name(cfg), cell_hash=cell_hash, error=reason,
                            started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    else:
        OmegaConf.save(OmegaConf.create(config), cell_dir / "config.yaml")
        try:
            ensure_reference_model(cfg, cell_dir)
            t0 = time.perf_counter()
            result = spawn_worker(cfg, cell_dir, cell_hash, on_wait)
            # interpreter start + imports + the cell: the harness overhead is this minus the windows
            result.metrics["time.worker_wall_s"] = time.perf_counter() - t0
        except RuntimeError as exc:
            result = CellResult(status="failed", cell=qconfig.cell_name(cfg), cell_hash=cell_hash, error=str(exc))
    record = make_record(result, config, cell_dir, suite)
    record["tracking"]["parent_run_id"] = parent_run_id
    record_path = write_record(cell_dir, record)
    t0 = time.perf_counter()
    track(record, record_path, cfg, parent_run_id)
    record["orchestrator"] = {"tracking_s": time.perf_counter() - t0}
    write_record(cell_dir, record)
    return CellOutcome(record, record_path)
