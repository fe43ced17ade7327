"""Local records: one JSON file per cell, written before MLflow is touched (nothing is lost if it is down).

A record is the cell's result plus its resolved config and its tracking state (``tracking.synced``,
``tracking.run_id``), so ``qbench sync`` can upload it later, exactly once.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from qbench.record import CellResult, write_json_atomic

RECORD_NAME = "record.json"
SCHEMA_VERSION = 1


def make_record(result: CellResult, config: dict[str, Any], cell_dir: Path, suite: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    record = result.to_json()
    record_id = hashlib.sha256(f"{cell_dir.resolve()}|{result.cell_hash}|{time.time_ns()}".encode()).hexdigest()[:20]
    record.update(
        schema_version=SCHEMA_VERSION,
        # identity of this record in MLflow (tag qbench.record_id): what makes `qbench sync` exactly-once
        record_id=record_id,
        config=config,
        cell_dir=str(cell_dir),
        suite=suite or {},
        tracking={"synced": False, "run_id": None, "uri": None, "experiment": None, "error": None},
    )
    return record


def write_record(cell_dir: Path, record: dict[str, Any]) -> Path:
    path = cell_dir / RECORD_NAME
    write_json_atomic(path, record)
    return path


def read_record(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


RECORD_DIRS = ("runs", "suites")  # where qbench writes records under results_dir (not MLflow's copies)


def iter_records(results_dir: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every readable record of single runs and suites under ``results_dir`` (MLflow's artifact copies are
    not records; unreadable files are skipped: a kill mid-write leaves none)."""
    paths = [p for sub in RECORD_DIRS for p in (results_dir / sub).rglob(RECORD_NAME)]
    for path in sorted(paths):
        try:
            yield path, read_record(path)
        except (OSError, json.JSONDecodeError):
            continue
