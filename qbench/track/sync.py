"""``qbench sync``: upload the local records that did not reach MLflow (tracking server down), exactly once.

Each record carries a ``record_id`` that is also a tag of its MLflow run (``qbench.record_id``): before
creating a run, sync looks the id up, so a record is never uploaded twice — not after a successful sync,
not after a sync that was interrupted between creating the run and marking the record. Suite cells whose
suite parent run could not be created either get one (found by the suite run directory, or created with
the suite's state), and the suite's summary files are attached to it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qbench.config import TrackingConfig, one_line
from qbench.record import iter_records, write_record
from qbench.storage import write_json_atomic
from qbench.track.mlflow_tracker import PARENT_TAG, client_for, experiment_id, find_run, log_record
from qbench.track.uri import DEFAULT_URI, resolve_uri


@dataclass
class SyncReport:
    """What one sync did: records uploaded, found already in MLflow, failed (one error each); suite parent runs
    created."""

    uploaded: int = 0
    already_in_mlflow: int = 0
    parents_created: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.errors)


def pending_records(results_dir: Path, include_untracked: bool = False) -> list[tuple[Path, dict[str, Any]]]:
    """Records not in MLflow (only those whose run had tracking enabled, unless ``include_untracked``)."""
    out = []
    for path, record in iter_records(results_dir):
        if record.get("tracking", {}).get("synced"):
            continue
        enabled = record.get("config", {}).get("tracking", {}).get("enabled", True)
        if enabled or include_untracked:
            out.append((path, record))
    return out


def _tracking_for(record: dict[str, Any], uri: str | None, experiment: str | None) -> TrackingConfig:
    cfg = record.get("config", {}).get("tracking", {})
    return TrackingConfig(enabled=True, uri=uri or cfg.get("uri", DEFAULT_URI),
                          experiment=experiment or cfg.get("experiment", "qbench"))


def _suite_parent(client: Any, exp_id: str, record: dict[str, Any], cache: dict[str, str], report: SyncReport
                  ) -> str | None:
    """The parent run of a suite cell: the one the record knew, else one found or created for its run dir."""
    suite = record.get("suite") or {}
    run_dir = suite.get("run_dir")
    if not run_dir:
        return None
    known = record.get("tracking", {}).get("parent_run_id")
    if known:
        return known
    if run_dir in cache:
        return cache[run_dir]
    found = client.search_runs([exp_id], filter_string=f"tags.`qbench.run_dir` = '{run_dir}'", max_results=1)
    if found:
        cache[run_dir] = found[0].info.run_id
        return cache[run_dir]
    state_path = Path(run_dir).parent / "state.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    tags = {"qbench.suite": suite.get("name", "sweep"), "qbench.role": "suite", "qbench.run_dir": run_dir,
            "qbench.started_at": state.get("started_at", ""), "qbench.synced_later": "true"}
    for key in ("git_sha", "host_id", "host"):
        if record.get("tags", {}).get(f"env.{key}"):
            tags[f"qbench.{key}"] = record["tags"][f"env.{key}"]
    parent = client.create_run(exp_id, run_name=f"suite:{tags['qbench.suite']}", tags=tags).info.run_id
    for name in ("summary.csv", "summary.md"):
        if (Path(run_dir) / name).is_file():
            client.log_artifact(parent, str(Path(run_dir) / name))
    client.set_terminated(parent, "FINISHED")
    if state.get("run_dir") == run_dir:  # later resumes of this suite run attach to it
        state["parent_run_id"] = parent
        write_json_atomic(state_path, state)
    cache[run_dir] = parent
    report.parents_created += 1
    return parent


def sync(results_dir: Path, uri: str | None = None, experiment: str | None = None,
         include_untracked: bool = False) -> SyncReport:
    """Upload every pending record of ``results_dir``; safe to run any number of times."""
    report = SyncReport()
    parents: dict[str, str] = {}
    for path, record in pending_records(results_dir, include_untracked):
        tracking = _tracking_for(record, uri, experiment)
        try:
            client = client_for(tracking.uri)
            exp_id = experiment_id(client, tracking.experiment, results_dir)
            existing = find_run(client, exp_id, record.get("record_id", ""))
            if existing is not None and existing.info.status != "RUNNING":
                run_id = existing.info.run_id
                report.already_in_mlflow += 1
            else:  # not logged yet, or left partial (RUNNING) by an attempt that died midway: log_record completes it
                parent = (existing.data.tags.get(PARENT_TAG) if existing is not None
                          else _suite_parent(client, exp_id, record, parents, report))
                run_id = log_record(record, tracking, results_dir, parent)
                record["tracking"]["parent_run_id"] = parent
                report.uploaded += 1
        except Exception as exc:
            report.errors.append(f"{path}: {one_line(exc)[:200]}")
            continue
        record["tracking"].update(synced=True, run_id=run_id, uri=resolve_uri(tracking.uri),
                                  experiment=tracking.experiment, error=None)
        write_record(path.parent, record)
    return report


def cmd_sync(args: list[str]) -> int:
    """qbench sync [--results-dir DIR] [--tracking-uri URI] [--experiment NAME] [--include-untracked]"""
    import argparse

    parser = argparse.ArgumentParser(prog="qbench sync",
                                     description="Upload local records that are not in MLflow yet (exactly once).")
    parser.add_argument("--results-dir", default="results", help="where qbench wrote its records (default: results)")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: the one each record was run with)")
    parser.add_argument("--experiment", default=None, help="experiment (default: each record's)")
    parser.add_argument("--include-untracked", action="store_true",
                        help="also upload records of runs made with tracking disabled")
    ns = parser.parse_args(args)
    results_dir = Path(ns.results_dir)
    if not results_dir.is_dir():
        print(f"qbench: no results directory {results_dir} (run qbench from where you ran the cells, "
              "or pass --results-dir)", file=sys.stderr)
        return 2
    report = sync(results_dir, ns.tracking_uri, ns.experiment, ns.include_untracked)
    print(f"synced {report.uploaded} record(s); {report.already_in_mlflow} already in MLflow; "
          f"{report.parents_created} suite parent run(s) created; {report.failed} failed")
    for error in report.errors[:10]:
        print(f"  {error}")
    return 1 if report.failed else 0
