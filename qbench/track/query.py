"""Reading runs back from MLflow: suite runs (parents), their cells (children) as a pandas table, and the
figures derived against each cell's FP32 reference of the same suite run (:mod:`qbench.track.reference`).

Used by ``qbench compare`` (reports) and ``qbench check`` (regressions); both read what MLflow holds, so
they work the same against the local SQLite store and a shared tracking server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qbench.track import reference
from qbench.track.mlflow_tracker import PARENT_TAG, client_for

SUITE_ROLE_FILTER = "tags.`qbench.role` = 'suite'"


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


_REFERENCE_FIGURES = {"fp32_top1": "acc.top1", "fp32_p50_ms": "latency.p50_ms",
                      "fp32_artifact_bytes": "size.artifact_bytes"}


def with_fp32_comparisons(frame: pd.DataFrame) -> pd.DataFrame:
    """Add, for the cells of one suite run, ``fp32_cell`` and ``fp32_cell_hash`` (the name and hash of each cell's
    FP32 reference, chosen by :func:`qbench.track.reference.assign_references`), that cell's figures
    (``fp32_top1``, ``fp32_p50_ms``, ``fp32_artifact_bytes``) and the figures relative to it (``delta_top1_pt``,
    ``acc_pct_fp32``, ``speedup``, ``size_ratio``: :func:`qbench.track.reference.relative_figures`); NaN where
    there is none."""
    if frame.empty:
        return frame
    frame = frame.copy()
    rows = [row for _, row in frame.iterrows()]
    metrics = [{k[len("metrics."):]: v for k, v in row.items() if str(k).startswith("metrics.")} for row in rows]
    candidates = [reference.row_candidate(row) for row in rows]
    chosen = reference.assign_references(candidates)
    refs = [None if i is None else metrics[i] for i in chosen]
    frame["fp32_cell"] = pd.Series([None if i is None else candidates[i].name for i in chosen], index=frame.index,
                                   dtype=object)
    frame["fp32_cell_hash"] = pd.Series([None if i is None else candidates[i].cell_hash for i in chosen],
                                        index=frame.index, dtype=object)
    for column, name in _REFERENCE_FIGURES.items():
        frame[column] = pd.Series([np.nan if ref is None else ref.get(name, np.nan) for ref in refs],
                                  index=frame.index, dtype=float)
    kernels = frame["kernel"].fillna("").astype(str).tolist()
    tasks = [reference.task_metric({k[len("tags."):]: v for k, v in row.items() if str(k).startswith("tags.")})
             for row in rows]
    relative = [reference.relative_figures(m, k, ref, task)
                for m, k, ref, task in zip(metrics, kernels, refs, tasks, strict=True)]
    for column in ("delta_top1_pt", "acc_pct_fp32", "speedup", "speedup_unpaired", "size_ratio"):
        frame[column] = pd.Series([np.nan if r[column] is None else r[column] for r in relative], index=frame.index,
                                  dtype=float)
    return frame


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
    from qbench.track.mlflow_tracker import run_params, run_tags

    rows = []
    for record in records:
        tracking = record.get("tracking") or {}
        row: dict[str, Any] = {"run_id": tracking.get("run_id"), "suite_run": suite_run}
        row.update({f"metrics.{k}": float(v) for k, v in (record.get("metrics") or {}).items()})
        row.update({f"params.{k}": v for k, v in run_params(record.get("config") or {}).items()})
        tags = {**run_tags(dict(record)), "mlflow.runName": record["cell"]}
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
