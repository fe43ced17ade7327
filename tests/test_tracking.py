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
