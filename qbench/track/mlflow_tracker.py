"""MLflow logging of cell records (one run per cell; suites: child runs of one parent run).

Uses ``MlflowClient`` with explicit run ids rather than mlflow's global "active run", so cells logged from
different processes (spawned workers, joblib, SLURM) attach to the right parent.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from qbench.config import flatten
from qbench.track.uri import is_local, resolve_uri

# Fail fast when a tracking server is down: the record is kept locally and synced later.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

PARENT_TAG = "mlflow.parentRunId"
_PARAM_MAX = 6000
_TAG_MAX = 5000


def client_for(uri: str) -> Any:
    """An MlflowClient for ``uri`` (relative SQLite paths made absolute)."""
    import logging

    from mlflow.tracking import MlflowClient

    # mlflow logs database migrations at INFO on first use of a store: not news for qbench's users
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=resolve_uri(uri))


def experiment_id(client: Any, name: str, results_dir: Path) -> str:
    """Id of experiment ``name``, created with artifacts under ``results_dir/mlartifacts`` for local stores."""
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    location = None
    if is_local(client.tracking_uri):
        location = (results_dir / "mlartifacts").resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # created concurrently by another worker
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def run_params(config: dict[str, Any]) -> dict[str, str]:
    """A record's config as MLflow params: flattened (``quant.weights.bits``), as text."""
    return {k: str(v)[:_PARAM_MAX] for k, v in flatten(config).items()}


def run_tags(record: dict[str, Any]) -> dict[str, str]:
    """A record's MLflow tags: the cell's own (kernel, threads, env.*, energy.source, opmix.*) as they are, and
    qbench's bookkeeping under ``qbench.*``."""
    tags = {k: str(v)[:_TAG_MAX] for k, v in (record.get("tags") or {}).items()}
    tags.update({"qbench.cell": record["cell"], "qbench.cell_hash": record.get("cell_hash", ""),
                 "qbench.status": record["status"], "qbench.record_id": record.get("record_id", "")})
    if record.get("error"):
        tags["qbench.error"] = record["error"][:_TAG_MAX]
    suite = record.get("suite") or {}
    if suite.get("name"):
        tags["qbench.suite"] = suite["name"]
    return tags


def find_run(client: Any, exp_id: str, record_id: str) -> Any | None:
    """The run logged for a record (tag ``qbench.record_id``), complete or left partial by an attempt that
    failed midway; None when there is none."""
    if not record_id:
        return None
    runs = client.search_runs([exp_id], filter_string=f"tags.`qbench.record_id` = '{record_id}'", max_results=1)
    return runs[0] if runs else None


def log_record(record: dict[str, Any], tracking: Any, results_dir: Path, parent_run_id: str | None = None) -> str:
    """Log a record as an MLflow run (params, metrics, tags, artifacts); returns the run id.

    Idempotent, so a failed attempt (e.g. SQLite's "database is locked" from a parallel cell) can simply be
    retried: the run of a record is found by its ``qbench.record_id`` before one is created, and what is logged
    into it is the same every time (metrics carry the cell's end time, which the store de-duplicates)."""
    from mlflow.entities import Metric, Param, RunTag

    client = client_for(tracking.uri)
    exp_id = experiment_id(client, tracking.experiment, results_dir)
    existing = find_run(client, exp_id, record.get("record_id", ""))
    if existing is not None:
        run_id = existing.info.run_id
    else:
        tags = run_tags(record)
        if parent_run_id:
            tags[PARENT_TAG] = parent_run_id
        run_id = client.create_run(exp_id, run_name=record["cell"], tags=tags).info.run_id
    timestamp = _record_time_ms(record)
    metrics = [Metric(k, float(v), timestamp, 0) for k, v in record["metrics"].items()]
    params = [Param(k, v) for k, v in run_params(record["config"]).items()]
    for i in range(0, max(len(metrics), len(params)), 100):
        client.log_batch(run_id, metrics=metrics[i : i + 100], params=params[i : i + 100])
    cell_dir = Path(record["cell_dir"])
    for name in ("config.yaml", "record.json", "worker.log", "latency_samples.csv"):
        if (cell_dir / name).is_file():
            client.log_artifact(run_id, str(cell_dir / name))
    for artifact in record.get("artifacts", []):
        path = Path(artifact)
        if path.is_file() and path.suffix == ".onnx":
            client.log_artifact(run_id, str(path), "model")
    client.set_tag(run_id, RunTag("qbench.status", record["status"]).key, record["status"])
    client.set_terminated(run_id, "FINISHED" if record["status"] != "failed" else "FAILED")
    return run_id


def _record_time_ms(record: dict[str, Any]) -> int:
    """When the cell ended (else started), in ms: the same for every attempt to log the record."""
    from datetime import datetime

    for key in ("ended_at", "started_at"):
        try:
            return int(datetime.strptime(record.get(key) or "", "%Y-%m-%dT%H:%M:%S%z").timestamp() * 1000)
        except ValueError:
            continue
    return _epoch_ms()


def _epoch_ms() -> int:
    import time

    return int(time.time() * 1000)
