"""MLflow logging of records is idempotent: a retried or interrupted attempt never leaves a second run (or a
second metric point) for the same record."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from qbench.config import TrackingConfig
from qbench.record import CellResult, make_record, write_record

LOCKED = "(sqlite3.OperationalError) database is locked"


def _record(tmp_path: Path) -> tuple[dict, Path]:
    result = CellResult(status="finished", cell="digits_cnn/w8a8-pc/torch", cell_hash="0123456789abcdef",
                        metrics={"acc.top1": 0.97, "latency.p50_ms": 0.25}, tags={"kernel": "simulated"},
                        started_at="2026-01-02T03:04:05+0000", ended_at="2026-01-02T03:04:25+0000")
    cell_dir = tmp_path / "results" / "runs" / "cell"
    record = make_record(result, {"quant": {"method": "ptq", "weights": {"bits": 8}}}, cell_dir)
    return record, write_record(cell_dir, record)


def _cfg(tmp_path: Path) -> SimpleNamespace:
    tracking = TrackingConfig(enabled=True, uri=f"sqlite:///{tmp_path}/results/mlflow.db", experiment="qbench")
    return SimpleNamespace(tracking=tracking, results_dir=str(tmp_path / "results"))


def _runs(cfg: SimpleNamespace, record_id: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    experiment = client.get_experiment_by_name("qbench")
    return client.search_runs([experiment.experiment_id], filter_string=f"tags.`qbench.record_id` = '{record_id}'")


def test_a_retry_after_the_run_was_created_leaves_one_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite reports "database is locked" after the run was created and its figures written: the retry
    completes that run instead of creating a second one with the same record id."""
    from mlflow.tracking import MlflowClient

    from qbench.orchestrate.runner import track

    record, path = _record(tmp_path)
    cfg = _cfg(tmp_path)
    log_batch = MlflowClient.log_batch
    calls = []

    def locked_once(self, *args, **kwargs):
        out = log_batch(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError(LOCKED)
        return out

    monkeypatch.setattr(MlflowClient, "log_batch", locked_once)
    track(record, path, cfg, None)
    assert len(calls) == 2  # retried
    (run,) = _runs(cfg, record["record_id"])
    assert run.info.status == "FINISHED" and run.data.metrics["acc.top1"] == 0.97
    assert run.data.params["quant.weights.bits"] == "8"
    history = MlflowClient(tracking_uri=cfg.tracking.uri).get_metric_history(run.info.run_id, "acc.top1")
    assert len(history) == 1  # the same point, not logged twice
    saved = json.loads(path.read_text())
    assert saved["tracking"]["synced"] and saved["tracking"]["run_id"] == run.info.run_id


def test_sync_completes_a_run_left_partial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A record whose run was created but not finished (the process died midway) is completed by qbench sync,
    not counted as already uploaded and not uploaded twice."""
    from mlflow.tracking import MlflowClient

    from qbench.track.sync import sync

    record, _ = _record(tmp_path)
    cfg = _cfg(tmp_path)
    log_batch = MlflowClient.log_batch

    def dies(self, *args, **kwargs):
        raise RuntimeError("killed midway")

    monkeypatch.setattr(MlflowClient, "log_batch", dies)
    first = sync(Path(cfg.results_dir), uri=cfg.tracking.uri)
    assert first.failed == 1
    (partial,) = _runs(cfg, record["record_id"])
    assert partial.info.status == "RUNNING" and not partial.data.metrics

    monkeypatch.setattr(MlflowClient, "log_batch", log_batch)
    second = sync(Path(cfg.results_dir), uri=cfg.tracking.uri)
    assert (second.uploaded, second.already_in_mlflow, second.failed) == (1, 0, 0)
    (run,) = _runs(cfg, record["record_id"])
    assert run.info.run_id == partial.info.run_id
    assert run.info.status == "FINISHED" and run.data.metrics["acc.top1"] == 0.97


def _logged(tmp_path: Path, **fields) -> object:
    """The MLflow run of a record with ``fields`` changed (times, status, error, metrics), logged as a suite
    cell would be."""
    from mlflow.tracking import MlflowClient

    from qbench.track.mlflow_tracker import log_record

    record, _ = _record(tmp_path)
    record.update(fields)
    cfg = _cfg(tmp_path)
    run_id = log_record(record, cfg.tracking, Path(cfg.results_dir))
    return MlflowClient(tracking_uri=cfg.tracking.uri).get_run(run_id)


def test_a_run_spans_the_cell_not_the_upload(tmp_path: Path) -> None:
    """MLflow's Duration is the cell's: the run starts and ends when the cell did (the record's times)."""
    from datetime import datetime

    run = _logged(tmp_path)
    start = datetime.fromisoformat("2026-01-02T03:04:05+00:00").timestamp() * 1000
    assert (run.info.start_time, run.info.end_time) == (start, start + 20_000)
    assert run.info.status == "FINISHED"


def test_the_duration_is_the_workers_wall_when_the_orchestrator_timed_it(tmp_path: Path) -> None:
    """The record's times have whole seconds and the worker's start follows its imports: the orchestrator's
    ``time.worker_wall_s`` is the cell's wall, ending at the record's end."""
    run = _logged(tmp_path, metrics={"acc.top1": 0.97, "time.worker_wall_s": 23.456})
    assert run.info.end_time - run.info.start_time == 23_456
    assert run.info.end_time == 1767323065000  # 2026-01-02T03:04:25Z


@pytest.mark.parametrize(("error", "status"), [
    ("RuntimeError: CUDA out of memory", "FAILED"),
    ("worker crashed: killed by signal SIGSEGV; last log lines: ...", "FAILED"),
    ("timeout: the worker ran longer than measure.timeout_s=900s and was killed", "KILLED"),
    ("worker crashed: killed by signal SIGKILL", "KILLED"),
])
def test_failed_cells_are_failed_or_killed_runs(tmp_path: Path, error: str, status: str) -> None:
    run = _logged(tmp_path, status="failed", metrics={}, error=error)
    assert run.info.status == status
    assert run.data.tags["qbench.status"] == "failed"
    assert run.data.tags["mlflow.note.content"].startswith("failed: ")


def test_a_skipped_cell_is_a_finished_run_with_its_reason(tmp_path: Path) -> None:
    run = _logged(tmp_path, status="skipped", metrics={}, ended_at="", error="4-bit weights need a 4-bit kernel")
    assert run.info.status == "FINISHED" and run.info.end_time == run.info.start_time
    assert run.data.tags["mlflow.note.content"] == "skipped: 4-bit weights need a 4-bit kernel"


def test_experiments_qbench_creates_open_in_the_model_training_view(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from qbench.track.mlflow_tracker import experiment_id

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    new = experiment_id(client, "qbench", tmp_path)
    assert client.get_experiment(new).tags["mlflow.experimentKind"] == "custom_model_development"
    old = client.create_experiment("older")  # created before qbench set the kind: tagged on next use
    experiment_id(client, "older", tmp_path)
    assert client.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"
    client.set_experiment_tag(old, "mlflow.experimentKind", "genai_development")  # the user's choice stays
    experiment_id(client, "older", tmp_path)
    assert client.get_experiment(old).tags["mlflow.experimentKind"] == "genai_development"
