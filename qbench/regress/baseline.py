"""Baselines: what one complete suite run measured, per cell, frozen into ``suites/baselines/<suite>.json``.

A suite run and a baseline have the same shape (a *snapshot*), so the gates compare like with like::

    {"suite", "run_id", "started_at", "git_sha", "qbench_version", "host": {host_id, cpu, isa, versions...},
     "cells": {cell name: {"status", "kernel", "scheme", "method", "weight_bits", "activation_bits", "host_id",
                           "unstable", "accuracy": {...}, "latency": {..., "samples_ms"}, "memory": {...},
                           "size": {...}, "deployment": {"metrics", "tags"} or None}}}

A baseline adds ``schema_version``, ``created_at`` and where it came from (``source``). Cells are keyed by
name (``qbench.cell``), not by hash: an override that changes no label keeps the cell comparable.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qbench import __version__
from qbench.config import CheckConfig, one_line, paths, suite_check
from qbench.measure import gap
from qbench.metrics import as_number
from qbench.regress.gates import GATED_RESOURCES
from qbench.storage import write_json_atomic
from qbench.track.reference import task_metric
from qbench.track.uri import public_uri

SCHEMA_VERSION = 1
BASELINES_ENV = "QBENCH_BASELINES_DIR"
# latency samples kept per cell: more are summarised by evenly spaced quantiles (same distribution, for the
# Mann-Whitney test, at a bounded file size)
MAX_SAMPLES = 1000
_ACCURACY = ("top1", "top5", "agreement_fp32")
_HOST_TAGS = {"host": "env.host", "cpu": "env.cpu.model", "isa": "env.cpu.isa",
              "physical_cores": "env.cpu.physical_cores", "torch": "env.version.torch",
              "onnxruntime": "env.version.onnxruntime", "cuda": "env.cuda"}


class BaselineError(Exception):
    """No baseline, unknown suite, incomplete suite run, bad check settings: one line, exit 2."""


def check_settings(suite: str) -> CheckConfig:
    """The suite's ``suite.check`` settings (:func:`qbench.config.suite_check.check_settings`), bad ones a
    :class:`BaselineError`."""
    try:
        return suite_check.check_settings(suite)
    except suite_check.SuiteSettingsError as exc:
        raise BaselineError(str(exc)) from None


# ----------------------------------------------------------------------------------------- locations
def baseline_path(suite: str, baselines_dir: str | Path | None = None) -> Path:
    """``<baselines_dir>/<suite>.json``; default ``$QBENCH_BASELINES_DIR``, else ``baselines/`` next to the
    suite's YAML."""
    directory = baselines_dir or os.environ.get(BASELINES_ENV)
    if directory:
        return Path(directory).expanduser() / f"{suite}.json"
    yaml_path = suite_check.suite_yaml(suite)
    if yaml_path is None:
        known = sorted({p.stem for d in paths.suite_dirs() for p in d.glob("*.yaml")})
        raise BaselineError(f"unknown suite {suite!r} (suites: {', '.join(known) or 'none'}); "
                            f"or give --baselines-dir")
    return yaml_path.parent / "baselines" / f"{suite}.json"


# ------------------------------------------------------------------------------------------ snapshots
def _int(value: Any) -> int | None:
    number = as_number(value)
    return None if number is None else int(number)


def compact_samples(samples: np.ndarray | None) -> list[float] | None:
    """Samples for the JSON file: at most MAX_SAMPLES (evenly spaced quantiles beyond), 5 significant digits."""
    if samples is None or len(samples) == 0:
        return None
    values = np.asarray(samples, dtype=float)
    if values.size > MAX_SAMPLES:
        values = np.quantile(values, np.linspace(0, 1, MAX_SAMPLES))
    return [float(f"{v:.5g}") for v in values]


def latency_is_gated(row: pd.Series | dict[str, Any]) -> bool:
    """FP32 cells (their own p50) and quantized cells with a real speed-up; not simulated kernels, whose
    latency is float latency plus fake-quant overhead."""
    finished = row.get("status") == "finished"
    return finished and (row.get("params.quant.method") == "none" or as_number(row.get("speedup")) is not None)


def cell_snapshot(row: pd.Series | dict[str, Any], samples: np.ndarray | None = None,
                  fp32_unstable: bool = False) -> dict[str, Any]:
    """The figures the gates read, from one row of :func:`qbench.track.query.with_fp32_comparisons`
    (``fp32_unstable``: the FP32 cell this cell's speed-up is computed against was tagged unstable)."""
    def metric(name: str) -> float | None:
        return as_number(row.get(f"metrics.{name}"))

    def relative(name: str) -> float | None:  # a figure of (or relative to) the FP32 reference
        return as_number(row.get(name))

    task_name, task_higher = task_metric({k[len("tags."):]: v for k, v in row.items()
                                          if isinstance(k, str) and k.startswith("tags.")})
    return {
        "status": row.get("status"),
        "kernel": row.get("kernel") or None,
        "scheme": row.get("tags.scheme"),
        "method": row.get("params.quant.method"),
        "weight_bits": _int(row.get("params.quant.weights.bits")),
        "activation_bits": _int(row.get("params.quant.activations.bits")),
        "cell_hash": row.get("tags.qbench.cell_hash"),
        "error": row.get("tags.qbench.error") if isinstance(row.get("tags.qbench.error"), str) else None,
        "host_id": row.get("tags.env.host_id") if isinstance(row.get("tags.env.host_id"), str) else None,
        "qbench_version": row.get("tags.env.qbench") if isinstance(row.get("tags.env.qbench"), str) else None,
        "unstable": row.get("tags.latency.unstable") == "true",
        "accuracy": {**{k: metric(f"acc.{k}") for k in _ACCURACY}, "fp32_top1": relative("fp32_top1"),
                     "delta_top1_pt": relative("delta_top1_pt"), "acc_pct_fp32": relative("acc_pct_fp32"),
                     "task_metric": task_name, "task_higher_is_better": task_higher, "task": metric(task_name)},
        "latency": {"p50_ms": metric("latency.p50_ms"), "p99_ms": metric("latency.p99_ms"),
                    "n": _int(metric("latency.n")), "fp32_p50_ms": relative("fp32_p50_ms"),
                    "speedup": relative("speedup"), "fp32_unstable": fp32_unstable,
                    "paired": metric("speedup.paired") is not None and relative("speedup") is not None,
                    "samples_ms": compact_samples(samples)},
        **{group: {k: metric(f"{group}.{k}") for k in keys} for group, keys in GATED_RESOURCES.items()},
        "deployment": _deployment(row),
    }


def _deployment(row: pd.Series | dict[str, Any]) -> dict[str, Any] | None:
    """What the deployment_gap gate reads: the cell's simulation figures and the tags that name a likely cause;
    None for cells without a simulation to compare with (FP32, simulated kernels)."""
    metrics, tags = gap.split_row(row)
    return {"metrics": metrics, "tags": tags} if gap.deployment_gap(metrics, tags).checked else None


def _most_common(values: pd.Series) -> Any:
    values = values.dropna()
    return values.mode().iloc[0] if not values.empty else None


def _hash(row: pd.Series) -> str:
    value = row.get("tags.qbench.cell_hash")
    return value if isinstance(value, str) else ""


def run_snapshot(uri: str, parent: Any, *, with_samples: bool = True) -> dict[str, Any]:
    """Snapshot of the suite run ``parent`` (an MLflow run): one entry per cell name (the latest child run of
    each name: a resumed suite re-logs the cells it re-runs)."""
    from qbench.record import cell_dir
    from qbench.track import query

    frame = query.cell_runs(uri, parent.info.run_id)
    if frame.empty:
        raise BaselineError(f"suite run {parent.info.run_id} has no cell runs")
    # every cell's reference is found among all the run's cells (its latest run each) before cells are keyed by
    # name: two cells of one name (a sweep over a key the name leaves out) must not lose their references
    frame = query.with_fp32_comparisons(query.latest_per_cell(frame))
    if "start_time" in frame.columns:
        frame = frame.sort_values("start_time")
    # whether the FP32 cell behind each speed-up was unstable: that cell, as with_fp32_comparisons names it
    methods = frame.get("params.quant.method", pd.Series(None, index=frame.index, dtype=object))
    references = frame[(methods == "none") & (frame["status"] == "finished")]
    unstable_reference = {(r["cell"], _hash(r)): r.get("tags.latency.unstable") == "true"
                          for _, r in references.iterrows()}
    frame = frame.drop_duplicates("cell", keep="last")
    tags = parent.data.tags
    run_dir = tags.get("qbench.run_dir")
    cells = {}
    for _, row in frame.sort_values("cell").iterrows():
        samples = None
        if with_samples and latency_is_gated(row):
            local = None
            if run_dir:
                local = cell_dir(Path(run_dir), row["cell"], str(row.get("tags.qbench.cell_hash", "")))
                local = local / "latency_samples.csv"
            samples = query.latency_samples(uri, row["run_id"], local)
        reference = (row.get("fp32_cell"), row.get("fp32_cell_hash") or "")
        cells[row["cell"]] = cell_snapshot(row, samples, unstable_reference.get(reference, False))
    finished = frame[frame["status"] == "finished"]
    host_ids = finished.get("tags.env.host_id", pd.Series(dtype=object))
    host_id = _most_common(host_ids)
    host_rows = finished[host_ids == host_id] if host_id is not None else finished
    host: dict[str, Any] = {"host_id": host_id}
    if not host_rows.empty:
        first = host_rows.iloc[0]
        host.update({k: first.get(f"tags.{tag}") for k, tag in _HOST_TAGS.items()})
    host = {k: (v if isinstance(v, str) else None) for k, v in host.items()}
    return {
        "suite": tags.get("qbench.suite"),
        "run_id": parent.info.run_id,
        "started_at": tags.get("qbench.started_at"),
        "git_sha": tags.get("qbench.git_sha"),
        "qbench_version": _most_common(finished.get("tags.env.qbench", pd.Series(dtype=object))),
        "host": host,
        "planned_cells": _int(tags.get("qbench.cells")),
        "run_status": parent.info.status,
        "cells": cells,
    }


# -------------------------------------------------------------------------------------------- files
def build_baseline(snapshot: dict[str, Any], *, uri: str, experiment: str | None,
                   allow_failed: bool = False) -> dict[str, Any]:
    """The baseline of a *complete* suite run: every planned cell logged, the run ended, and (unless
    ``allow_failed``) no failed cell — a baseline that already fails would hide the failure."""
    cells = snapshot["cells"]
    planned = snapshot.get("planned_cells")
    if snapshot.get("run_status") == "RUNNING" or (planned is not None and len(cells) < planned):
        raise BaselineError(f"suite run {snapshot['run_id']} is not complete ({len(cells)} of {planned} cells "
                            f"logged, status {snapshot.get('run_status')}): finish it (re-run the same command "
                            f"to resume) or pick another with --run")
    failed = sorted(name for name, cell in cells.items() if cell["status"] == "failed")
    if failed and not allow_failed:
        raise BaselineError(f"suite run {snapshot['run_id']} has failed cells ({', '.join(failed)}): fix them, "
                            f"or pass --allow-failed to record them as failing")
    return {
        "schema_version": SCHEMA_VERSION,
        "suite": snapshot["suite"],
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "qbench_version": snapshot.get("qbench_version") or __version__,
        "host": snapshot["host"],
        "source": {"run_id": snapshot["run_id"], "started_at": snapshot.get("started_at"),
                   "git_sha": snapshot.get("git_sha"), "tracking_uri": public_uri(uri), "experiment": experiment},
        "cells": cells,
    }


def write_baseline(path: Path, baseline: dict[str, Any]) -> None:
    write_json_atomic(path, baseline)


def read_baseline(path: Path) -> dict[str, Any]:
    """The baseline at ``path``; BaselineError when it is missing or unreadable."""
    if not path.is_file():
        suite = path.stem
        raise BaselineError(f"no baseline for suite {suite!r} at {path} "
                            f"(create one: qbench baseline update --suite {suite})")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BaselineError(f"unreadable baseline {path}: {one_line(exc)}") from None
    if data.get("schema_version") != SCHEMA_VERSION or not isinstance(data.get("cells"), dict):
        raise BaselineError(f"baseline {path} has schema version {data.get('schema_version')}, this qbench reads "
                            f"{SCHEMA_VERSION}: re-create it with qbench baseline update")
    return data
