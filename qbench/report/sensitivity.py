"""The per-layer sensitivity of ``qbench analyze`` as a table (CSV, rich terminal table) and a bar plot (PNG).

Reads what the worker wrote (:mod:`qbench.worker.analyze`): one row per (layer, kind), kinds ``weights``,
``activations`` and ``layer`` (both), and the ranking (most sensitive first) with its rule.
"""

from __future__ import annotations

import io
from typing import Any

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table

from qbench.metrics import CATALOG

KINDS = ("layer", "weights", "activations")
COLUMNS = ("rank", "layer", "type", "kind", "sqnr_db", "metric_quantized", "metric_float", "drop", "recovery")


def frame(analysis: dict[str, Any]) -> pd.DataFrame:
    """The analysis as one row per (layer, kind), most sensitive layer first (``rank`` 1), kinds in KINDS order."""
    rank = {name: i + 1 for i, name in enumerate(analysis["ranking"])}
    rows = pd.DataFrame(analysis["rows"])
    for column in COLUMNS:
        if column not in rows:
            rows[column] = float("nan")
    rows["rank"] = rows["layer"].map(rank)
    rows["_kind"] = rows["kind"].map({k: i for i, k in enumerate(KINDS)})
    return rows.sort_values(["rank", "_kind"])[list(COLUMNS)].reset_index(drop=True)


def _fmt(value: Any, fmt: str = ".4g", scale: float = 1.0) -> str:
    return "-" if value is None or pd.isna(value) else format(value * scale, fmt)


def _scale(metric: str) -> tuple[float, str, str]:
    """How a difference of ``metric`` is shown: (scale, unit, format); fractions (top-1) in points."""
    known = CATALOG.get(metric)
    if known is not None and known.scale == 100:
        return 100.0, "pt", "+.2f"
    return 1.0, "", "+.4g"


def print_table(analysis: dict[str, Any], table: pd.DataFrame, console: Console, top: int | None = None) -> None:
    """A rich table, one line per layer (most sensitive first): SQNR, drop and recovery for layer / weights /
    activations (drop: the metric worse than FP32 with only that quantized; recovery: better than the quantized
    model with only that float; both in the task's direction, in the metric's units)."""
    metric = analysis["metric"]
    scale, unit, fmt = _scale(metric)
    shown = CATALOG.get(metric)
    value = shown.show if shown is not None else _fmt
    direction = "higher" if analysis["higher_is_better"] else "lower"
    title = (f"{analysis['cell']}: per-layer sensitivity ({metric}, {direction} is better; "
             f"FP32 {value(analysis['float_metric'])}, quantized {value(analysis['quantized_metric'])}; "
             f"{analysis['evaluation_samples']} samples)")
    out = Table(title=title, header_style="bold", title_justify="left")
    for name, justify in (("#", "right"), ("layer", "left"), ("type", "left"), ("SQNR dB\nlayer / w / a", "right"),
                          (f"drop{' ' + unit if unit else ''}, only it quantized\nlayer / w / a", "right"),
                          (f"recovery{' ' + unit if unit else ''}, only it float\nlayer / w / a", "right")):
        out.add_column(name, justify=justify, overflow="fold")
    by_layer = {name: rows.set_index("kind") for name, rows in table.groupby("layer", sort=False)}
    ranking = analysis["ranking"][:top] if top else analysis["ranking"]
    for name in ranking:
        rows = by_layer[name]

        def three(column: str, fmt: str = fmt, scale: float = scale, rows: pd.DataFrame = rows) -> str:
            return " / ".join(_fmt(rows.loc[k, column], fmt, scale) if k in rows.index else "-" for k in KINDS)

        out.add_row(str(int(rows["rank"].iloc[0])), name, str(rows["type"].iloc[0]), three("sqnr_db", ".1f", 1.0),
                    three("drop"), three("recovery"))
    console.print(out)
    left = len(analysis["ranking"]) - len(ranking)
    console.print(f"ranking: {analysis['ranking_rule']}" + (f"; {left} more layers in the CSV" if left > 0 else ""),
                  highlight=False, markup=False, soft_wrap=True)


def bar_plot(analysis: dict[str, Any], table: pd.DataFrame, top: int = 25) -> bytes:
    """PNG: for the ``top`` most sensitive layers, the drop with only weights / activations quantized and the
    recovery with only weights / activations float (horizontal bars, most sensitive at the top)."""
    names = analysis["ranking"][:top]
    scale, unit, _ = _scale(analysis["metric"])
    direction = "higher" if analysis["higher_is_better"] else "lower"
    fig = Figure(figsize=(11, 0.32 * len(names) + 1.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=True)
    height = 0.4
    for ax, column, title in ((axes[0], "drop", "drop vs FP32, only this quantized"),
                              (axes[1], "recovery", "recovery vs quantized, only this float")):
        for offset, kind, color in ((-height / 2, "weights", "tab:blue"), (height / 2, "activations", "tab:orange")):
            rows = table[table["kind"] == kind].set_index("layer")
            values = [scale * float(rows.loc[n, column]) if n in rows.index and pd.notna(rows.loc[n, column]) else 0.0
                      for n in names]
            ax.barh([i + offset for i in range(len(names))], values, height=height, color=color, label=kind)
        ax.axvline(0, color="black", linewidth=0.6)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(f"{analysis['metric']} {unit} ({direction} is better)", fontsize=8)
    axes[0].set_yticks(range(len(names)), names, fontsize=7)
    axes[0].invert_yaxis()
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{analysis['cell']}: per-layer sensitivity (most sensitive first)", fontsize=10)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()
