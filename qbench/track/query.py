"""Reading runs back from MLflow: suite runs (parents), their cells (children) as a pandas table, and the
figures derived against each cell's FP32 reference of the same suite run.

Used by ``qbench compare`` (reports) and ``qbench check`` (regressions); both read what MLflow holds, so
they work the same against the local SQLite store and a shared tracking server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
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
    latency is float latency), ``size_ratio`` (compression vs FP32 on disk), and ``fp32_cell``: which cell
    that reference is (its name)."""
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
    frame["fp32_cell"] = frame["_group"].map(lambda group: refs.get(group, {}).get("cell"))
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


# ------------------------------------------------------------------------------------- additions for reports
def suite_names(uri: str, experiment: str | None = None) -> list[str]:
    """Names of the suites that have at least one suite run in the store (for error messages)."""
    client = client_for(uri)
    try:
        runs = client.search_runs(_experiment_ids(client, experiment), filter_string=SUITE_ROLE_FILTER,
                                  max_results=5000)
    except NoRunsFound:
        return []
    return sorted({r.data.tags.get("qbench.suite", "") for r in runs} - {""})


def experiment_names(uri: str) -> list[str]:
    """Names of the experiments in the store (for error messages)."""
    return sorted(e.name for e in client_for(uri).search_experiments())


def records_frame(records: list[dict[str, Any]], suite_run: str | None = None) -> pd.DataFrame:
    """Local records shaped like :func:`cell_runs` (``metrics.*``, ``params.*``, ``tags.*`` as
    ``mlflow_tracker.log_record`` would log them), so reports read the same columns with or without MLflow.

    ``suite_run`` (the parent run id, or the suite's run directory when MLflow is off) groups the cells that
    are compared with the same FP32 reference."""
    from qbench.track.mlflow_tracker import _params

    rows = []
    for record in records:
        tracking = record.get("tracking") or {}
        row: dict[str, Any] = {"run_id": tracking.get("run_id"), "suite_run": suite_run}
        row.update({f"metrics.{k}": float(v) for k, v in (record.get("metrics") or {}).items()})
        row.update({f"params.{k}": v for k, v in _params(record.get("config") or {}).items()})
        tags = {k: str(v) for k, v in (record.get("tags") or {}).items()}
        tags.update({"qbench.cell": record["cell"], "qbench.cell_hash": record.get("cell_hash", ""),
                     "qbench.status": record["status"], "mlflow.runName": record["cell"]})
        if record.get("error"):
            tags["qbench.error"] = record["error"][:5000]
        if (record.get("suite") or {}).get("name"):
            tags["qbench.suite"] = record["suite"]["name"]
        row.update({f"tags.{k}": v for k, v in tags.items()})
        rows.append(row)
    return _with_basic_columns(pd.DataFrame(rows))


def with_fp32_comparisons_per_suite_run(frame: pd.DataFrame) -> pd.DataFrame:
    """:func:`with_fp32_comparisons` within each suite run, so latency ratios only ever compare cells measured
    in the same run. A run outside any suite is its own group: it has no speed-up, and its accuracy figures
    fall back to the FP32 top-1 the cell measured itself on the same inputs (``acc.fp32_top1``)."""
    if frame.empty:
        return frame
    frame = frame.copy()
    if "suite_run" not in frame.columns:
        frame["suite_run"] = frame.get(f"tags.{PARENT_TAG}")
    keys = frame["suite_run"].astype(object).where(frame["suite_run"].notna(),
                                                   pd.Series([f"row:{i}" for i in frame.index], index=frame.index))
    out = pd.concat([with_fp32_comparisons(part) for _, part in frame.groupby(keys, sort=False)]).loc[frame.index]
    own = out.get("metrics.acc.fp32_top1")
    top1 = out.get("metrics.acc.top1")
    if own is not None and top1 is not None:
        missing = out["fp32_top1"].isna() & own.notna()
        out.loc[missing, "fp32_top1"] = own[missing]
        out.loc[missing, "delta_top1_pt"] = (top1[missing] - own[missing]) * 100
        out.loc[missing, "acc_pct_fp32"] = top1[missing] / own[missing] * 100
    return out


def latency_samples(uri: str, run_id: str, local_path: Path | None = None) -> np.ndarray | None:
    """Per-call latency samples (ms) of a cell run: ``local_path`` when that file exists (the suite run's own
    ``latency_samples.csv``), else the run's MLflow artifact; None when neither is readable."""
    import tempfile

    def read(path: Path) -> np.ndarray:
        return pd.read_csv(path)["latency_ms"].to_numpy(dtype=float)

    if local_path is not None and local_path.is_file():
        try:
            return read(local_path)
        except (OSError, ValueError, KeyError):
            pass
    try:
        with tempfile.TemporaryDirectory(prefix="qbench-samples-") as tmp:
            return read(Path(client_for(uri).download_artifacts(run_id, "latency_samples.csv", tmp)))
    except Exception:  # no such artifact (skipped/failed cell), or the server is unreachable
        return None


def latest_per_cell(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per cell of each suite run. Resuming a suite re-runs its failed cells and re-records its skipped
    ones under the same parent run, so a cell can have several runs there: the latest one is its result.
    Runs outside a suite are all kept."""
    if frame.empty or "tags.qbench.cell_hash" not in frame.columns or "start_time" not in frame.columns:
        return frame
    parent = frame.get(f"tags.{PARENT_TAG}")
    suite_run = parent.fillna(frame["run_id"]) if parent is not None else frame["run_id"]
    key = suite_run.astype(str) + "/" + frame["tags.qbench.cell_hash"].astype(str)
    latest = frame.assign(_key=key).sort_values("start_time", ascending=False, kind="stable").drop_duplicates("_key")
    return frame[frame.index.isin(latest.index)]
