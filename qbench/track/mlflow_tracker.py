"""MLflow logging of cell records (one run per cell; suites: child runs of one parent run).

Uses ``MlflowClient`` with explicit run ids rather than mlflow's global "active run", so cells logged from
different processes (spawned workers, joblib, SLURM) attach to the right parent.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from qbench.config import flatten
from qbench.track.notes import NOTE_TAG, cell_note
from qbench.track.uri import is_local, resolve_uri

# Fail fast when a tracking server is down: the record is kept locally and synced later.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

PARENT_TAG = "mlflow.parentRunId"
SUITE_RUN_TAG = "qbench.suite_run"  # the suite's parent run id, on the parent and its cells: one filter finds both
# MLflow 3 opens an experiment in its GenAI or its model-training view by this tag (mlflow's own UI sets it to
# these values: server/js experimentKind); qbench's experiments are model-training ones
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
_PARAM_MAX = 6000
_TAG_MAX = 5000
# a failed cell whose worker was stopped from outside (qbench/orchestrate/runner.py words these errors)
_KILLED = re.compile(r"^timeout:|killed by signal SIG(KILL|TERM|INT)\b")


def client_for(uri: str) -> Any:
    """An MlflowClient for ``uri`` (relative SQLite paths made absolute)."""
    import logging

    from mlflow.tracking import MlflowClient

    # mlflow logs database migrations at INFO on first use of a store: not news for qbench's users
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=resolve_uri(uri))


def mark_model_training(client: Any, experiment: Any) -> None:
    """Tag an experiment qbench created before it set :data:`EXPERIMENT_KIND_TAG` (a kind already set stays).
    Cosmetic: a server that refuses (permissions) never stops a record from being logged."""
    if EXPERIMENT_KIND_TAG in (experiment.tags or {}):
        return
    try:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    except Exception:
        return


def experiment_id(client: Any, name: str, results_dir: Path) -> str:
    """Id of experiment ``name``, created with artifacts under ``results_dir/mlartifacts`` for local stores and
    tagged as a model-training experiment."""
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        mark_model_training(client, existing)
        return existing.experiment_id
    location = None
    if is_local(client.tracking_uri):
        location = (results_dir / "mlartifacts").resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location,
                                        tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
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
    tags[NOTE_TAG] = cell_note(record)
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
    started_ms, ended_ms = record_times_ms(record)
    if existing is not None:
        run_id = existing.info.run_id
    else:
        tags = run_tags(record)
        if parent_run_id:
            tags.update({PARENT_TAG: parent_run_id, SUITE_RUN_TAG: parent_run_id})
        # the cell's own start (and below its end): MLflow's Duration column is the cell's, not the upload's
        run_id = client.create_run(exp_id, start_time=started_ms, run_name=record["cell"], tags=tags).info.run_id
    timestamp = ended_ms
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
    client.set_terminated(run_id, run_status(record), end_time=ended_ms)
    return run_id


def run_status(record: dict[str, Any]) -> str:
    """The MLflow run status of a record, so the UI's own status filter works: FAILED for a failed cell, KILLED
    when its worker was stopped from outside (timeout, SIGKILL/SIGTERM/SIGINT), FINISHED otherwise (skipped
    cells too: their reason is in the description)."""
    if record["status"] != "failed":
        return "FINISHED"
    return "KILLED" if _KILLED.search(record.get("error") or "") else "FAILED"


def _parse_ms(stamp: str | None) -> int | None:
    from datetime import datetime

    try:
        return int(datetime.strptime(stamp or "", "%Y-%m-%dT%H:%M:%S%z").timestamp() * 1000)
    except ValueError:
        return None


def record_times_ms(record: dict[str, Any]) -> tuple[int, int]:
    """The cell's start and end (epoch ms), the same for every attempt to log the record. The record's times
    have whole seconds and the worker's start follows its imports, so when the orchestrator timed the worker
    (``time.worker_wall_s``) the start is the end minus that wall: the run's Duration is the cell's wall."""
    started, ended = _parse_ms(record.get("started_at")), _parse_ms(record.get("ended_at"))
    end = ended if ended is not None else started if started is not None else _epoch_ms()
    wall = (record.get("metrics") or {}).get("time.worker_wall_s")
    if ended is not None and isinstance(wall, (int, float)) and wall >= 0:
        return int(end - wall * 1000), end
    return (started if started is not None else end), end


def _epoch_ms() -> int:
    import time

    return int(time.time() * 1000)
