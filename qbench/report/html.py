"""The self-contained HTML report: tables and plots (PNG as base64 data URIs) in one file, with inline CSS,
readable offline and shareable as is."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence

import pandas as pd

from qbench.report import compare
from qbench.report.columns import ALL_COLUMNS, BY_KEY, COLUMNS, format_value
from qbench.report.compare import status_counts
from qbench.report.plots import Plot

NOTES = (
    "Δ FP32, % of FP32, speed-up and disk ratio compare each cell with the FP32 cell of the same model, dataset, "
    "backend and measurement settings in the same suite run.",
    "No speed-up is given for simulated kernels: their latency is float latency plus fake-quant overhead, not an "
    "integer kernel's latency.",
    "Energy: the column next to each figure says its source — measured (rapl: CPU package, nvml: GPU board) or "
    "estimated from CPU time (estimate). Measured and estimated figures are never compared as equals.",
    f"{compare.GAP_MARK} (flags column, highlighted rows): a cell on a real backend whose deployed top-1 falls more "
    "than the suite's check.deployment_gap_pt (default 1) points below its simulation, or whose predictions agree with "
    "the simulation's on fewer than check.min_agreement_simulated (default 98 %) of the samples: the backend, not "
    "the scheme, lost that accuracy. The likely cause (int8 path on this CPU's ISA, op mix) is listed at the top "
    "and in the gap cause column; qbench check fails the cell's deployment_gap gate.",
    "A dash means the figure does not exist for that cell (failed or skipped cell, or a metric the backend does "
    "not produce, e.g. the deployment gap of simulated or FP32 cells).",
)

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 16px;
       color: #1d1f23; }
h1 { font-size: 22px; margin: 0 0 8px; } h2 { font-size: 17px; margin: 28px 0 8px; }
table { border-collapse: collapse; font-size: 12px; }
th, td { padding: 3px 6px; border-bottom: 1px solid #e3e5e8; white-space: nowrap; }
th { background: #f3f4f6; text-align: left; position: sticky; top: 0; cursor: help; white-space: normal;
     vertical-align: bottom; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: #fafbfc; }
.meta td { border: none; padding: 1px 12px 1px 0; } .meta td:first-child { color: #666; }
.scroll { overflow-x: auto; max-width: 100%; }
.status { font-weight: 600; } .status-finished { color: #177a2f; } .status-failed { color: #b42318; }
.status-skipped { color: #9a6700; }
figure { display: inline-block; margin: 8px 16px 16px 0; vertical-align: top; width: 640px; max-width: 100%; }
figure img { width: 100%; border: 1px solid #e3e5e8; }
figcaption { font-size: 12.5px; color: #444; margin-top: 4px; }
dl { font-size: 12.5px; columns: 2; } dt { font-family: monospace; font-weight: 600; } dd { margin: 0 0 6px 0; }
.small { font-size: 12.5px; color: #444; }
tbody tr.flagged, tbody tr.flagged:nth-child(even) { background: #fdecea; }
.flag { color: #b42318; font-weight: 600; }
"""

# set on <body> once the page has loaded: how many embedded images decoded (headless-browser checks read it)
_LOADED_SCRIPT = ("window.addEventListener('load', function () { document.body.dataset.imagesLoaded = "
                  "Array.prototype.filter.call(document.images, function (i) { return i.complete && "
                  "i.naturalWidth > 0; }).length; });")


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def table_html(table: pd.DataFrame, keys: Sequence[str], table_id: str) -> str:
    """One comparison table as HTML (column meanings as header tooltips, status colored)."""
    head = "".join(
        f'<th class="{"num" if BY_KEY[k].numeric else "text"}" title="{_esc(k + ": " + BY_KEY[k].help)}">'
        f"{_esc(BY_KEY[k].header)}</th>" for k in keys)
    rows = []
    for _, row in table.iterrows():
        cells = []
        for key in keys:
            column = BY_KEY[key]
            text = _esc(format_value(column, row[key]))
            if key == "status":
                cells.append(f'<td class="status status-{_esc(row[key])}">{text}</td>')
            elif key == "flags" and row[key] == compare.GAP_FLAG:
                cause = _esc(row.get("gap_cause", ""))
                cells.append(f'<td class="text flag" title="{cause}">{_esc(compare.GAP_MARK)}</td>')
            else:
                cells.append(f'<td class="{"num" if column.numeric else "text"}">{text}</td>')
        flagged = " flagged" if row.get("flags") == compare.GAP_FLAG else ""
        rows.append(f'<tr class="row-{_esc(row["status"])}{flagged}">{"".join(cells)}</tr>')
    return (f'<div class="scroll"><table id="{table_id}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def render(table: pd.DataFrame, *, keys: Sequence[str], plots: Sequence[tuple[Plot, bytes]],
           meta: Mapping[str, str], title: str) -> str:
    """The whole report as one HTML document (no external resources)."""
    meta_rows = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in meta.items())
    problems = table[table["status"] != "finished"]
    problem_items = "".join(f"<li><b>{_esc(r['cell'])}</b> {_esc(r['status'])}: {_esc(r['note'] or 'no reason')}</li>"
                            for _, r in problems.iterrows())
    flag_items = "".join(f'<li class="flag">{_esc(line)}</li>' for line in compare.flagged_lines(table))
    figures = []
    for plot, png in plots:
        data = base64.b64encode(png).decode("ascii")
        figures.append(f'<figure id="figure-{plot.name}"><img id="plot-{plot.name}" alt="{_esc(plot.title)}" '
                       f'src="data:image/png;base64,{data}"><figcaption><b>{_esc(plot.title)}.</b> '
                       f"{_esc(plot.note)}</figcaption></figure>")
    glossary = "".join(f"<dt>{_esc(c.key)}</dt><dd>{_esc(c.header)}: {_esc(c.help)}</dd>" for c in COLUMNS)
    notes = "".join(f"<li>{_esc(n)}</li>" for n in NOTES)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_esc(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{_esc(title)}</h1>
<table class="meta">{meta_rows}</table>
<p class="small" id="counts">{_esc(status_counts(table))}</p>
{f'<ul class="small" id="problems">{problem_items}</ul>' if problem_items else ""}
{f'<ul class="small" id="flags">{flag_items}</ul>' if flag_items else ""}
<h2>Comparison</h2>
{table_html(table, keys, "comparison")}
<h2>Plots</h2>
{"".join(figures)}
<h2>Notes</h2>
<ul class="small">{notes}</ul>
<details><summary class="small">Every column (also in comparison.csv)</summary>
{table_html(table, ALL_COLUMNS, "comparison-all")}
</details>
<h2>Columns</h2>
<dl>{glossary}</dl>
<script>{_LOADED_SCRIPT}</script>
</body></html>
"""
