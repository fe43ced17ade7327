"""Reading runs back from MLflow: suite runs (parents), their cells (children) as a pandas table, and the
figures derived against each cell's FP32 reference of the same suite run.

Used by ``qbench compare`` (reports) and ``qbench check`` (regressions); both read what MLflow holds, so
they work the same against the local SQLite store and a shared tracking server.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from qbench.track.mlflow_tracker import PARENT_TAG, client_for

SUITE_ROLE_FILTER = "tags.`qbench.role` = 'suite'"
# params that define which FP32 cell a quantized cell is compared with (same model, data, backend, protocol)
GROUP_PREFIXES = ("model.", "dataset.", "backend.", "measure.")


class NoRunsFound(LookupError):
    """The selection matched no run (the message says what was looked for)."""


def _experiment_ids(client: Any, experiment: str | None) -> list[str]:
    if experiment is None:
        return [e.experiment_id for e in client.search_experiments()]
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise NoRunsFound(f"no MLflow experiment named {experiment!r} at {client.tracking_uri}")
    return [found.experiment_id]


def find_suite_run(uri: str, *, run_id: str | None = None, suite: str | None = None,
                   experiment: str | None = None) -> Any:
    """The suite (parent) run ``run_id``, else the latest one of ``suite`` (any suite if None)."""
    client = client_for(uri)
    if run_id:
        try:
            return client.get_run(run_id)
        except Exception as exc:
            raise NoRunsFound(f"no MLflow run {run_id} at {uri}") from exc
    query = SUITE_ROLE_FILTER + (f" and tags.`qbench.suite` = '{suite}'" if suite else "")
    runs = client.search_runs(_experiment_ids(client, experiment), filter_string=query,
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        what = f"suite {suite!r}" if suite else "any suite"
        raise NoRunsFound(f"no suite run of {what} at {uri} (run one with: qbench run +suite=NAME)")
    return runs[0]


def cell_runs(uri: str, parent_run_id: str) -> pd.DataFrame:
    """One row per cell (child run) of a suite run, with MLflow's columns (``metrics.*``, ``params.*``,
    ``tags.*``) plus ``cell``, ``status``, ``kernel``."""
    import mlflow

    client = client_for(uri)
    parent = client.get_run(parent_run_id)
    mlflow.set_tracking_uri(client.tracking_uri)
    frame = mlflow.search_runs(experiment_ids=[parent.info.experiment_id],
                               filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'", max_results=50000)
    return _with_basic_columns(frame)


def experiment_cell_runs(uri: str, experiment: str) -> pd.DataFrame:
    """Every cell run of an experiment (single runs and suite cells, not the suite parents)."""
    import mlflow

    client = client_for(uri)
    ids = _experiment_ids(client, experiment)
    mlflow.set_tracking_uri(client.tracking_uri)
    frame = mlflow.search_runs(experiment_ids=ids, filter_string="tags.`qbench.cell` != ''", max_results=50000)
    return _with_basic_columns(frame)


def _with_basic_columns(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return frame
    frame = frame.copy()
    frame["cell"] = frame.get("tags.qbench.cell", frame.get("tags.mlflow.runName"))
    frame["status"] = frame.get("tags.qbench.status", "unknown")
    frame["kernel"] = frame.get("tags.kernel", "")
    return frame.reset_index(drop=True)


def _group_key(row: pd.Series, columns: list[str]) -> tuple:
    return tuple(str(row[c]) for c in columns)


def with_fp32_comparisons(frame: pd.DataFrame) -> pd.DataFrame:
    """Add figures relative to the FP32 cell of the same (model, dataset, backend, measure) group:
    ``delta_top1_pt``, ``acc_pct_fp32``, ``speedup`` (FP32 p50 / p50; not for simulated kernels, whose
    latency is float latency), ``size_ratio`` (compression vs FP32 on disk)."""
    if frame.empty:
        return frame
    frame = frame.copy()
    group_cols = sorted(c for c in frame.columns if c.startswith(tuple(f"params.{p}" for p in GROUP_PREFIXES)))
    frame["_group"] = frame.apply(lambda r: _group_key(r, group_cols), axis=1)
    is_ref = (frame.get("params.quant.method") == "none") & (frame["status"] == "finished")
    refs: dict[tuple, dict[str, Any]] = {}
    for _, row in frame[is_ref].iterrows():
        refs.setdefault(row["_group"], row.to_dict())

    def ref_value(row: pd.Series, column: str) -> float | None:
        value = refs.get(row["_group"], {}).get(column)
        return None if value is None or pd.isna(value) else float(value)

    top1 = frame.get("metrics.acc.top1")
    p50 = frame.get("metrics.latency.p50_ms")
    disk = frame.get("metrics.size.artifact_bytes")
    frame["fp32_top1"] = frame.apply(lambda r: ref_value(r, "metrics.acc.top1"), axis=1)
    frame["fp32_p50_ms"] = frame.apply(lambda r: ref_value(r, "metrics.latency.p50_ms"), axis=1)
    frame["fp32_artifact_bytes"] = frame.apply(lambda r: ref_value(r, "metrics.size.artifact_bytes"), axis=1)
    if top1 is not None:
        frame["delta_top1_pt"] = (top1 - frame["fp32_top1"].astype(float)) * 100
        frame["acc_pct_fp32"] = top1 / frame["fp32_top1"].astype(float) * 100
    if p50 is not None:
        speedup = frame["fp32_p50_ms"].astype(float) / p50
        frame["speedup"] = speedup.where(frame["kernel"] != "simulated")
    if disk is not None:
        frame["size_ratio"] = frame["fp32_artifact_bytes"].astype(float) / disk
    return frame.drop(columns=["_group"])
