"""The report of a suite run, written at the end of every suite: plots (PNG), the self-contained HTML report
and the comparison table (CSV, markdown) under ``<results_dir>/reports/<suite>/<parent run id>/``, logged to
the suite's MLflow parent run under ``report/``.

The table is read back from MLflow (exactly what ``qbench compare`` shows for that suite run); when MLflow
is off, down, or misses cells, it is built from the local records shaped like MLflow's runs, through the
same derivation.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from qbench.config import CheckConfig
from qbench.report import compare
from qbench.report.columns import ALL_COLUMNS, REPORT_COLUMNS, fitting
from qbench.track import query

log = logging.getLogger("qbench.report")
REPORT_ARTIFACT_PATH = "report"


def build_report(table: pd.DataFrame, meta: Mapping[str, str], out_dir: Path, title: str,
                 keys: Sequence[str] = REPORT_COLUMNS) -> dict[str, Path]:
    """Write the plots, ``report.html``, ``comparison.csv`` and ``comparison.md`` of a comparison table."""
    from qbench.report import html, plots  # matplotlib: imported only when a report is drawn

    keys = fitting(keys, table)
    out_dir.mkdir(parents=True, exist_ok=True)
    rendered = [(plot, plot.png()) for plot in plots.all_plots(table)]
    files: dict[str, Path] = {}
    for plot, png in rendered:
        files[plot.name] = out_dir / f"{plot.name}.png"
        files[plot.name].write_bytes(png)
    files["html"] = out_dir / "report.html"
    files["html"].write_text(html.render(table, keys=keys, plots=rendered, meta=meta, title=title))
    files["csv"] = out_dir / "comparison.csv"
    files["csv"].write_text(compare.to_csv(table, ALL_COLUMNS))
    files["md"] = out_dir / "comparison.md"
    files["md"].write_text(compare.to_markdown(table, ALL_COLUMNS))
    return files


def suite_table(name: str, cells: list[dict[str, Any]], run_dir: Path, parent_run_id: str | None,
                tracking: Any, settings: CheckConfig | None = None) -> tuple[pd.DataFrame, dict[str, str]]:
    """The comparison table of a suite run and its metadata: from MLflow when it holds every cell, else from
    the local records. ``settings``: the suite's check thresholds (deployment-gap flags; default: defaults)."""
    if parent_run_id and tracking is not None and tracking.enabled:
        try:
            frame = query.latest_per_cell(query.cell_runs(tracking.uri, parent_run_id))
            if len(frame) >= len(cells):
                parent = query.find_suite_run(tracking.uri, run_id=parent_run_id)
                meta = {**compare.suite_meta(parent, tracking.uri), "source": "MLflow"}
                return compare.comparison_table(query.with_fp32_comparisons_per_suite_run(frame), settings), meta
            log.warning("MLflow holds %d of the %d cells of this suite run: the report is built from the local "
                        "records", len(frame), len(cells))
        except Exception as exc:
            log.warning("could not read the suite run back from MLflow (%s): the report is built from the local "
                        "records", str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
    frame = query.records_frame(cells, suite_run=parent_run_id or str(run_dir))
    meta = {"suite": name, "suite run (MLflow parent)": parent_run_id or "", "run dir": str(run_dir),
            "source": "local records"}
    return compare.comparison_table(query.with_fp32_comparisons_per_suite_run(frame), settings), {
        k: v for k, v in meta.items() if v}


def write_suite_report(name: str, cells: list[dict[str, Any]], run_dir: Path, results_dir: Path,
                       parent_run_id: str | None, tracking: Any, settings: CheckConfig | None = None) -> Path | None:
    """End-of-suite report; a failure is a warning, never the suite's failure. Returns the HTML path."""
    try:
        table, meta = suite_table(name, cells, run_dir, parent_run_id, tracking, settings)
        out_dir = (results_dir / "reports" / name / (parent_run_id or run_dir.name)).resolve()
        files = build_report(table, meta, out_dir, title=f"qbench report: suite {name}")
    except Exception as exc:
        log.warning("could not write the suite report: %s: %s", type(exc).__name__, str(exc).splitlines()[0][:200]
                    if str(exc) else "")
        return None
    if parent_run_id and tracking is not None and tracking.enabled:
        try:
            from qbench.track.mlflow_tracker import client_for

            client = client_for(tracking.uri)
            for path in files.values():
                client.log_artifact(parent_run_id, str(path), REPORT_ARTIFACT_PATH)
        except Exception as exc:  # the files stay under results_dir
            log.warning("could not log the suite report to MLflow: %s", str(exc).splitlines()[0][:200])
    return files["html"]
