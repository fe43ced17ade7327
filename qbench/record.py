"""CellResult: what one cell produced (or why it did not), as plain JSON-able data."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATUSES = ("finished", "failed", "skipped")


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


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON so that a reader never sees a half-written file (a kill -9 leaves the old one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)
