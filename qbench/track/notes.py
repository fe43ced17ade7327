"""What MLflow's UI shows as a run's description (its markdown note, tag ``mlflow.note.content``, as
``mlflow.start_run(description=...)`` sets it): one line per cell, the suite's summary table on the parent run.

A cell's line is written when its run is logged (Δ against the FP32 model the cell evaluated itself) and
rewritten at the end of its suite with the figures relative to the suite's FP32 reference cell (speed-up).
It is plain text, not markdown: the runs table's Description column shows the note as it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from qbench.measure.gap import check_settings_of, deployment_gap
from qbench.metrics import as_number, metric, task_result

NOTE_TAG = "mlflow.note.content"
NOTE_MAX = 5000  # a tag value every MLflow server takes (newer ones take 8000)
_ERROR_MAX = 240
# the suite table's figures: (summary column, catalog metric that labels and formats it)
_FIGURES = (("top1", "acc.top1"), ("delta_fp32_pt", "delta_top1_pt"), ("p50_ms", "latency.p50_ms"),
            ("speedup", "speedup"))


def _first_line(text: str, limit: int = _ERROR_MAX) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _task_part(metrics: Mapping[str, Any], tags: Mapping[str, Any], delta_pt: float | None) -> str:
    """``top-1 98.61 % (Δ FP32 -0.28 pt)``, or another task's metric in its own terms (``ppl 63.299 (...)``)."""
    name = tags.get("task.metric") or "acc.top1"
    if name != "acc.top1":
        return task_result(metrics, tags)
    top1 = as_number(metrics.get("acc.top1"))
    if top1 is None:
        return "no top-1 (no labelled data)"
    if delta_pt is None and (own := as_number(metrics.get("acc.delta_top1"))) is not None:
        delta_pt = own * 100
    return f"top-1 {top1 * 100:.2f} %" + (f" (Δ FP32 {delta_pt + 0.0:+.2f} pt)" if delta_pt is not None else "")


def cell_note(record: Mapping[str, Any], speedup: float | None = None, delta_pt: float | None = None) -> str:
    """One line: kernel, task metric and Δ, speed-up (given by the suite; none for simulated kernels), p50 and
    any flag (deployment gap, unstable or contended latency); a skipped or failed cell's reason instead."""
    status = record.get("status", "")
    if status in ("skipped", "failed"):
        return f"{status}: {_first_line(record.get('error') or 'no reason recorded')}"
    metrics, tags = record.get("metrics") or {}, record.get("tags") or {}
    kernel = tags.get("kernel") or "kernel not recorded"
    gap = deployment_gap(metrics, tags, check_settings_of(record))
    # a deployment gap first: the runs table shows the first ~50 characters of a description
    parts = [f"⚠ deployment gap {gap.gap_pt:+.2f} pt vs simulation" if gap.flagged and gap.gap_pt is not None
             else "⚠ deployment gap" if gap.flagged else "", kernel, _task_part(metrics, tags, delta_pt)]
    if speedup is not None:
        parts.append(f"{speedup:.2f}x speed-up vs FP32")
    elif kernel == "simulated":
        parts.append("no speed-up (simulated kernel: float latency)")
    if (p50 := as_number(metrics.get("latency.p50_ms"))) is not None:
        parts.append(f"p50 {p50:.3f} ms")
    if gap.flagged:
        parts.append(gap.figures)
    if tags.get("latency.unstable") == "true":
        parts.append("latency unstable")
    if tags.get("latency.contended") == "true":
        parts.append("latency contended (parallel cells)")
    return " · ".join(p for p in parts if p)


def _cell(value: Any) -> str:
    text = "" if value is None or value != value else str(value)  # None or NaN
    return _first_line(text, 120).replace("|", "\\|")


def suite_note(name: str, rows: Sequence[Mapping[str, Any]], report_link: str | None = None) -> str:
    """The suite's summary table in markdown (rows: the suite summary's, ``qbench.orchestrate.console``), with a
    link to its HTML report; rows that would pass :data:`NOTE_MAX` are left to the report."""
    counts = {s: sum(1 for r in rows if r.get("status") == s) for s in ("finished", "failed", "skipped")}
    # plain text first: the runs table's Description column shows the note's start as it is
    head = f"suite {name}: {len(rows)} cells, " + ", ".join(f"{n} {s}" for s, n in counts.items())
    if report_link:
        head += f" · full report with plots: [report.html]({report_link})"
    figures = [(column, metric(figure)) for column, figure in _FIGURES]
    with_task = any(r.get("task") not in (None, "", "image_classification") for r in rows)
    header = ["cell", "status", "kernel", *(["task metric"] if with_task else []), *(m.label for _, m in figures),
              "flags / note"]
    lines = [head, "", "| " + " | ".join(header) + " |",
             "|" + "|".join(":--" if h in ("cell", "status", "kernel", "task metric", "flags / note") else "--:"
                            for h in header) + "|"]
    for i, row in enumerate(rows):
        note = "; ".join(x for x in ("⚠ gap" if row.get("flags") == "gap" else "", _cell(row.get("note"))) if x)
        cells = [_cell(row.get("cell")), _cell(row.get("status")), _cell(row.get("kernel")),
                 *([_cell(row.get("task_result"))] if with_task else []),
                 *(m.show(as_number(row.get(column))) for column, m in figures), note]
        line = "| " + " | ".join(cells) + " |"
        rest = len(rows) - i
        if sum(len(x) + 1 for x in lines) + len(line) + 80 > NOTE_MAX and rest > 0:
            lines.append(f"\n… {rest} more cells: see the report")
            break
        lines.append(line)
    return "\n".join(lines)
