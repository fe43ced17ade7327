"""Outputs of ``qbench tune``: the candidates table (terminal, CSV, JSON), the Pareto fronts (metric vs speed-up
over FP32 and vs artifact size, :func:`qbench.report.plots.pareto_mask`) as ``pareto.png``, a markdown report, and
the best configuration as a ready-to-run quant preset (``quant_tuned.yaml``) with the ``qbench run`` command."""

from __future__ import annotations

import io
import shlex
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from rich.console import Console
from rich.table import Table

from qbench.report.plots import pareto_mask

# the figure each objective optimizes: latency by the speed-up over FP32 (paired where the cell measured it: the
# unpaired p50s of two cells are minutes apart, and host drift is larger than the differences between candidates)
OBJECTIVES = {"latency": "speedup", "size": "size_bytes", "bops": "bops"}
MAXIMIZED = frozenset({"speedup"})
COLUMNS = ["cell", "move", "algorithm", "k", "layers", "metric", "drop", "meets", "p50_ms", "speedup", "speedup_ci",
           "size_kib", "bops", "kernel", "status", "front_latency", "front_size"]


def frame(rows: list[dict[str, Any]], higher_is_better: bool) -> pd.DataFrame:
    """One row per measured cell (FP32 first), with ``front_latency`` / ``front_size``: on the Pareto front of the
    metric against the speed-up / artifact size among finished cells."""
    table = pd.DataFrame(rows)
    sense = "max" if higher_is_better else "min"
    # the latency front on the speed-up (paired where measured), the figure the latency objective optimizes
    for column, x, direction in (("front_latency", "speedup", "max"), ("front_size", "size_kib", "min")):
        values = table[["metric", x]].astype(float)
        mask = pareto_mask(values, [sense, direction])
        table[column] = mask & (table["status"] == "finished")
    return table[[c for c in COLUMNS if c in table.columns]]


def _fmt(value: Any, spec: str) -> str:
    return "—" if value is None or (isinstance(value, float) and pd.isna(value)) else format(value, spec)


def _speedup(row: Any) -> str:
    """The speed-up with its paired 95 % CI where the cell measured one."""
    ci = row.get("speedup_ci")
    text = _fmt(row["speedup"], ".2f")
    return text if not isinstance(ci, list | tuple) else f"{text} [{ci[0]:.2f}, {ci[1]:.2f}]"


def print_table(table: pd.DataFrame, metric_name: str, unit: str, console: Console) -> None:
    """The measured candidates: k, layers moved, metric, drop vs FP32, p50, speed-up, size, fronts."""
    out = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    several = "algorithm" in table.columns and table["algorithm"].nunique() > 2  # "" (FP32) + more than one
    for header in ("move", *(("algorithm",) if several else ()), "k", "layers moved", metric_name, f"drop {unit}",
                   "meets", "p50 ms", "speed-up", "size KiB", "front"):
        out.add_column(header, overflow="fold")
    for _, row in table.iterrows():
        layers = str(row["layers"]) if len(str(row["layers"])) <= 40 else str(row["layers"])[:37] + "..."
        front = "/".join(n for n, c in (("lat", "front_latency"), ("size", "front_size")) if row[c])
        meets = "" if row["move"] == "fp32" else "yes" if row["meets"] else "no"
        status = "" if row["status"] == "finished" else f" ({row['status']})"
        out.add_row(str(row["move"]), *((str(row["algorithm"]),) if several else ()), str(row["k"]), layers + status,
                    _fmt(row["metric"], ".4f"),
                    _fmt(row["drop"], "+.2f"), meets, _fmt(row["p50_ms"], ".3f"), _speedup(row),
                    _fmt(row["size_kib"], ".1f"), front)
    console.print(out)


def pareto_png(table: pd.DataFrame, metric_name: str, title: str) -> bytes:
    """Metric vs speed-up and vs size, fronts joined, the FP32 cell marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4))
    FigureCanvasAgg(figure)
    done = table[table["status"] == "finished"]
    for ax, x, column, label in zip(figure.subplots(1, 2), ("speedup", "size_kib"), ("front_latency", "front_size"),
                                    ("speed-up vs FP32 (paired where measured)", "artifact size (KiB)"), strict=True):
        colors = ["tab:blue" if move == "fp32" else "tab:green" if meets else "tab:red"
                  for move, meets in zip(done["move"], done["meets"], strict=True)]
        ax.scatter(done[x], done["metric"], c=colors, s=30, label="blue: FP32; green / red: meets / misses the budget")
        front = done[done[column]].sort_values(x)
        ax.plot(front[x], front["metric"], "k--", lw=1, label="Pareto front")
        for _, row in done.iterrows():
            ax.annotate("fp32" if row["move"] == "fp32" else f"k={row['k']}", (row[x], row["metric"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(label)
        ax.set_ylabel(metric_name)
        ax.grid(alpha=0.3)
    figure.axes[0].legend(fontsize=7)
    figure.suptitle(title, fontsize=9)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def run_command(overrides: list[str]) -> str:
    """The ``qbench run`` command line of ``overrides``, quoted for a POSIX shell."""
    return " ".join(["qbench", "run", *(shlex.quote(a) for a in overrides)])


def write_preset(path: Path, quant: dict[str, Any], summary: str, command: str) -> None:
    """The tuned scheme as a ``conf/quant`` preset (the whole ``quant`` node, ``layers`` included), with how to run
    it in its header."""
    header = [f"# qbench tune: {summary}", f"# run it as measured:  {command}",
              "# or as a preset: copy this file to conf/quant/<name>.yaml and run  qbench run quant=<name> ..."]
    path.write_text("\n".join(header) + "\n" + yaml.safe_dump(quant, sort_keys=False))


def markdown(summary: dict[str, Any], table: pd.DataFrame) -> str:
    """The report: the verdict, the search's cost against exhaustive search, the best configuration, the table."""
    lines = [f"# qbench tune: {summary['cell']}", "", summary["verdict"], "",
             f"- budget: drop <= {summary['budget']:g} {summary['unit']} of {summary['metric']} vs FP32 "
             f"({summary['fp32_metric']:.4f} on {summary['backend']}); objective: {summary['objective']}",
             f"- measured candidates: {summary['measured']} (plus the FP32 reference); space: {summary['space']}",
             f"- ranking: {', '.join(summary['ranking'])}",
             f"- best: {summary['best_label']}", "", "```", summary["command"], "```", "",
             "![Pareto fronts](pareto.png)", "", table.to_markdown(index=False, floatfmt=".4g"), ""]
    return "\n".join(lines)
