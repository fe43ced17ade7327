"""What one cell produced, in the two shapes it travels in.

- :class:`CellResult`: what the worker hands back (``result.json`` in the cell folder): status, figures, tags.
- The *record* (:class:`Record`, ``record.json``): that result plus the cell's resolved config, its suite and its
  MLflow state (``tracking.synced``, ``tracking.run_id``). It is written before MLflow is touched, so nothing is
  lost when a tracking server is down, and ``qbench sync`` uploads it later, exactly once.

Both are plain JSON on disk, written atomically. The worker imports this module: it must not import
``qbench.track``, ``qbench.report`` or ``qbench.regress``. What the metric names mean: :mod:`qbench.metrics`.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from qbench.storage import write_json_atomic

STATUSES = ("finished", "failed", "skipped")
RECORD_NAME = "record.json"
SCHEMA_VERSION = 1
RECORD_DIRS = ("runs", "suites")  # where qbench writes records under results_dir (not MLflow's copies)


@dataclass
class CellResult:
    status: str
    cell: str
    cell_hash: str
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)
    error: str | None = None
    started_at: str = ""
    ended_at: str = ""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        # JSON has no inf/nan: non-finite figures are dropped (absent, never faked)
        data["metrics"] = {k: float(v) for k, v in self.metrics.items() if math.isfinite(float(v))}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CellResult:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)

    def write(self, path: Path) -> None:
        write_json_atomic(path, self.to_json())


class Tracking(TypedDict, total=False):
    """Where a record went in MLflow (``synced`` false until it got there)."""

    synced: bool
    run_id: str | None
    parent_run_id: str | None
    uri: str | None
    experiment: str | None
    error: str | None


class Record(TypedDict, total=False):
    """``record.json``: the fields of :class:`CellResult` plus the cell's context."""

    status: str
    cell: str
    cell_hash: str
    metrics: dict[str, float]
    tags: dict[str, str]
    artifacts: list[str]
    error: str | None
    started_at: str
    ended_at: str
    schema_version: int
    record_id: str  # also the MLflow tag qbench.record_id: what makes `qbench sync` exactly-once
    config: dict[str, Any]  # the resolved config (nested, as Hydra composed it)
    cell_dir: str
    suite: dict[str, Any]  # {"name", "run_dir"} for suite cells
    tracking: Tracking
    orchestrator: dict[str, float]  # the orchestrator's own timings (tracking_s)


def make_record(result: CellResult, config: dict[str, Any], cell_dir: Path, suite: dict[str, Any] | None = None
                ) -> Record:
    """The record of ``result``, not yet in MLflow."""
    record_id = hashlib.sha256(f"{cell_dir.resolve()}|{result.cell_hash}|{time.time_ns()}".encode()).hexdigest()[:20]
    record: Record = result.to_json()  # type: ignore[assignment]
    record.update(schema_version=SCHEMA_VERSION, record_id=record_id, config=config, cell_dir=str(cell_dir),
                  suite=suite or {},
                  tracking={"synced": False, "run_id": None, "uri": None, "experiment": None, "error": None})
    return record


def write_record(cell_dir: Path, record: Record) -> Path:
    path = cell_dir / RECORD_NAME
    write_json_atomic(path, dict(record))
    return path


def read_record(path: Path) -> Record:
    return json.loads(path.read_text())


def iter_records(results_dir: Path) -> Iterator[tuple[Path, Record]]:
    """Every readable record of single runs and suites under ``results_dir`` (MLflow's artifact copies are
    not records; unreadable files are skipped: a kill mid-write leaves none)."""
    paths = [p for sub in RECORD_DIRS for p in (results_dir / sub).rglob(RECORD_NAME)]
    for path in sorted(paths):
        try:
            yield path, read_record(path)
        except (OSError, json.JSONDecodeError):
            continue


def cell_dir(run_dir: Path, name: str, cell_hash: str) -> Path:
    """Where a suite run keeps a cell's files and record."""
    slug = name.replace("/", "__").replace("@", "_at_")
    return run_dir / "cells" / f"{slug}-{cell_hash[:8]}"
