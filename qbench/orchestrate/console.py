"""A suite's terminal side: live progress while cells run, then the summary table (terminal, CSV,
markdown) with deltas and speed-ups against the FP32 reference measured in the same suite run (chosen by
:mod:`qbench.track.reference`, as ``qbench compare`` and ``qbench check`` choose it)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from qbench.config import CheckConfig, one_line
from qbench.measure.gap import deployment_gap
from qbench.metrics import metric, paired_ci, task_result
from qbench.record import RECORD_NAME, read_record
from qbench.track import reference

if TYPE_CHECKING:
    from qbench.orchestrate.suite import PlannedCell

log = logging.getLogger("qbench.suite")
GAP_MARK = "⚠ gap"  # a real-backend cell far below its simulation (qbench.measure.gap)
console = Console(stderr=False, width=None if Console().is_terminal else 140)


class SuiteProgress:
    """k/N, current cell, elapsed and ETA (rich); degrades to log lines when output is not a terminal."""

    def __init__(self, progress: Progress, total: int) -> None:
        self.progress = progress
        self.total = total
        self.task = progress.add_task("suite", total=total, cell="")
        self.done = 0
        self.started = time.monotonic()

    def starting(self, batch: list[PlannedCell]) -> None:
        names = ", ".join(c.name for c in batch[:3]) + (" ..." if len(batch) > 3 else "")
        self.progress.update(self.task, cell=names)
        if not console.is_terminal:
            console.print(f"[{self.done + 1}/{self.total}] {names}  (elapsed {time.monotonic() - self.started:.0f} s)")

    def finished(self, batch: list[PlannedCell]) -> None:
        self.done += len(batch)
        self.progress.update(self.task, advance=len(batch))


@contextlib.contextmanager
def progress_for(total: int, resumed_cells: int = 0) -> Iterator[SuiteProgress]:
    if resumed_cells:
        console.print(f"resuming: {resumed_cells} cells already finished in this suite run are reused")
    columns = (TextColumn("cell"), MofNCompleteColumn(), BarColumn(), TimeElapsedColumn(), TextColumn("eta"),
               TimeRemainingColumn(), TextColumn("{task.fields[cell]}"))
    with Progress(*columns, console=console, disable=not console.is_terminal, transient=False) as progress:
        yield SuiteProgress(progress, total)


def print_plan(name: str, planned: list[PlannedCell]) -> None:
    """suite.dry_run=true: the cells a suite would run, in order, and why any would be skipped."""
    console.print(f"suite {name}: {len(planned)} cells")
    for i, cell in enumerate(planned, 1):
        note = " (FP32 reference added)" if cell.auto_reference else ""
        if cell.skip_reason:
            note += f" skipped: {cell.skip_reason}"
        console.print(f"{i:>3}. {cell.name}  [{cell.cell_hash}]{note}", highlight=False, markup=False)


# ------------------------------------------------------------------------------------------- summary
def collect(planned: list[PlannedCell], run_dir: Path) -> list[dict[str, Any]]:
    """The record of every planned cell in this suite run (a missing one counts as failed)."""
    from qbench import config as qconfig
    from qbench.record import cell_dir

    out = []
    for cell in planned:
        path = cell_dir(run_dir, cell.name, cell.cell_hash) / RECORD_NAME
        try:
            record = dict(read_record(path))
        except (OSError, ValueError):
            record = {"status": "failed", "cell": cell.name, "cell_hash": cell.cell_hash, "metrics": {}, "tags": {},
                      "config": qconfig.cell_config_dict(cell.cfg_node),
                      "error": "no record was written (launcher or orchestrator failure)"}
        record["_auto_reference"] = cell.auto_reference
        out.append(record)
    return out


def summary_frame(cells: list[dict[str, Any]], settings: CheckConfig | None = None) -> pd.DataFrame:
    """One row per cell: status, kernel, top-1, delta vs its FP32 reference in this suite run, p50, speed-up,
    flags (``gap``: deployed far below its simulation, judged with the suite's ``settings``), why a cell was
    flagged, and which cell its reference is (``fp32_cell``; ``_fp32_cell_hash``, not written to the summary
    files, tells two cells of one name apart)."""
    chosen = reference.assign_references([reference.record_candidate(c) for c in cells])
    rows = []
    for c, index in zip(cells, chosen, strict=True):
        m, t = c.get("metrics", {}), c.get("tags", {})
        ref = cells[index] if index is not None else None
        kernel = t.get("kernel", "")
        relative = reference.relative_figures(m, kernel, ref["metrics"] if ref else None, reference.task_metric(t))
        note = c.get("error") or ""
        if t.get("latency.unstable") == "true":
            note = (note + "; " if note else "") + "latency unstable"
        if t.get("latency.contended") == "true":
            note = (note + "; " if note else "") + "latency contended (parallel cells)"
        if c.get("_auto_reference"):
            note = (note + "; " if note else "") + "FP32 reference added"
        verdict = deployment_gap(m, t, settings) if c["status"] == "finished" else None
        flagged = verdict is not None and verdict.flagged
        rows.append({
            "cell": c["cell"], "status": c["status"], "kernel": kernel,
            "task": t.get("task", ""), "task_result": task_result(m, t),
            "top1": m.get("acc.top1"),
            "delta_fp32_pt": relative["delta_top1_pt"],
            "p50_ms": m.get("latency.p50_ms"),
            "speedup": relative["speedup"],  # paired where measured; none for simulated kernels (float latency)
            "speedup_ci": paired_ci(m),
            "speedup_unpaired": relative["speedup_unpaired"],
            "flags": "gap" if flagged else "",
            "note": note,
            "flag_detail": verdict.explanation if verdict is not None and flagged else "",
            "fp32_cell": ref["cell"] if ref else None,
            "_fp32_cell_hash": ref.get("cell_hash") if ref else None,
        })
    return pd.DataFrame(rows)


# the summary's figures: its column and the catalog metric that labels and formats it
SUMMARY_FIGURES = (("top1", "acc.top1"), ("delta_fp32_pt", "delta_top1_pt"), ("p50_ms", "latency.p50_ms"),
                   ("speedup", "speedup"))


def print_summary(name: str, frame: pd.DataFrame, elapsed_s: float | None) -> None:
    figures = [(column, metric(figure)) for column, figure in SUMMARY_FIGURES]
    # cells of other tasks than image classification show their own metric (perplexity, Spearman ρ)
    with_task = not set(frame.get("task", pd.Series(dtype=object)).fillna("")) <= {"", "image_classification"}
    table = Table(title=f"suite {name}", header_style="bold")
    task_columns = (("task metric", "left"),) if with_task else ()
    for col, justify in (("cell", "left"), ("status", "left"), ("kernel", "left"), *task_columns,
                         *((m.label, "right") for _, m in figures), ("paired CI", "right"), ("flags", "left"),
                         ("note", "left")):
        table.add_column(col, justify=justify, overflow="fold")
    colors = {"finished": "green", "failed": "red", "skipped": "yellow"}
    for row in frame.itertuples():
        shown = [m.show(getattr(row, column)) for column, m in figures]
        task = (row.task_result,) if with_task else ()
        table.add_row(row.cell, f"[{colors.get(row.status, 'white')}]{row.status}[/]", row.kernel, *task, *shown,
                      row.speedup_ci, f"[bold red]{GAP_MARK}[/]" if row.flags == "gap" else "", row.note[:120])
    console.print(table)
    if frame["speedup_ci"].astype(bool).any():
        console.print("speed-up: paired (timed interleaved with the FP32 reference in the cell) where a CI is shown, "
                      "else the ratio of the two cells' p50s")
    counts = frame["status"].value_counts().to_dict()
    parts = [f"{counts.get(s, 0)} {s}" for s in ("finished", "failed", "skipped")]
    console.print(f"{len(frame)} cells: {', '.join(parts)}" + (f" in {elapsed_s:.0f} s" if elapsed_s else ""))
    for row in frame[frame["status"] == "skipped"].itertuples():
        console.print(f"  skipped {row.cell}: {row.note}")
    for row in frame[frame["flags"] == "gap"].itertuples():
        # one unwrapped line per flagged cell, with its likely cause
        console.print(f"  {GAP_MARK} {row.cell}: {row.flag_detail}", highlight=False, markup=False, soft_wrap=True)


def finish_suite(name: str, planned: list[PlannedCell], run_dir: Path, state: dict[str, Any], tracking: Any,
                 elapsed_s: float) -> int:
    """Summary to terminal and files, artifacts to the parent run; exit status 0 unless a cell failed."""
    cells = collect(planned, run_dir)
    settings = planned[0].cfg.suite.check if planned else None
    frame = summary_frame(cells, settings)
    print_summary(name, frame, elapsed_s)
    unsynced = sum(1 for c in cells if c.get("tracking") and not c["tracking"].get("synced")
                   and c.get("config", {}).get("tracking", {}).get("enabled", True))
    if unsynced:
        console.print(f"[yellow]{unsynced} record(s) are not in MLflow (tracking server unreachable?); they are kept "
                      f"in {run_dir} - run `qbench sync` when the server is back[/yellow]")
    run_dir.mkdir(parents=True, exist_ok=True)
    shown = frame.drop(columns=[c for c in frame.columns if c.startswith("_")])
    shown.to_csv(run_dir / "summary.csv", index=False)
    (run_dir / "summary.md").write_text(shown.to_markdown(index=False, floatfmt=".4g"))
    parent = state.get("parent_run_id")
    if parent and tracking is not None and tracking.enabled:
        from qbench.track.mlflow_tracker import client_for

        try:
            client = client_for(tracking.uri)
            client.log_artifact(parent, str(run_dir / "summary.csv"))
            client.log_artifact(parent, str(run_dir / "summary.md"))
            counts = frame["status"].value_counts().to_dict()
            for status in ("finished", "failed", "skipped"):
                client.log_metric(parent, f"suite.cells_{status}", float(counts.get(status, 0)))
            client.set_terminated(parent, "FINISHED" if counts.get("failed", 0) == 0 else "FAILED")
        except Exception as exc:  # the summary files stay in run_dir
            log.warning("could not log the suite summary to MLflow: %s", str(exc).splitlines()[0][:200])
    from qbench.report.build import write_suite_report  # plots + HTML report; a failure only warns

    results_dir = Path(planned[0].cfg.results_dir) if planned else run_dir.parents[3]
    report = write_suite_report(name, cells, run_dir, results_dir, parent, tracking, settings)
    if report is not None:
        console.print(f"report: {report}")
    if parent and tracking is not None and tracking.enabled:
        _publish(name, parent, cells, frame, tracking.uri, report is not None)
    console.print(f"suite run: {run_dir}" + (f"   MLflow parent run: {parent}" if parent else ""))
    return 1 if (frame["status"] == "failed").any() else 0


def _publish(name: str, parent: str, cells: list[dict[str, Any]], frame: pd.DataFrame, uri: str,
             with_report: bool) -> None:
    """Descriptions, relative figures and the shared view of the suite run in MLflow (qbench.track.ui_view);
    a failure only warns: the records and summary files are complete without them."""
    from qbench.report.build import REPORT_ARTIFACT_PATH
    from qbench.track.ui_view import publish_suite

    try:
        publish_suite(uri, name, parent, cells, frame.to_dict("records"),
                      f"{REPORT_ARTIFACT_PATH}/report.html" if with_report else None)
    except Exception as exc:
        log.warning("could not describe the suite run in MLflow: %s", one_line(exc)[:200])
