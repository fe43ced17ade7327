"""Plots of a comparison table (matplotlib figures on an Agg canvas, PNG): accuracy vs latency and accuracy vs
size with their Pareto fronts marked, and accuracy vs weight bit-width per model.

Pareto semantics: accuracy is maximized, latency and size are minimized. A point dominates another when it
is at least as good in every objective and strictly better in at least one, so points with identical
figures are all on the front or all off it (ties are kept, never broken arbitrarily). Points missing a
figure are not drawn.

Simulated kernels (fake-quant run in float) are drawn hollow on the latency plot and kept off its front:
their latency is float latency plus fake-quant overhead, not what an integer kernel would take, so it must
not compete with measured kernels. Size is what the artifact occupies whatever ran it, so every finished
cell competes on the size front.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from qbench.metrics import CATALOG

FRONT_GID = "pareto-front"  # the gid of the front's marker collection (tests read the plotted front back)
SIMULATED_LABEL = "simulated kernel: float latency (off the front)"
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def pareto_mask(values: np.ndarray | pd.DataFrame, senses: Sequence[str]) -> np.ndarray:
    """True for the rows no other row dominates; ``senses`` says per column ``"max"`` or ``"min"``.

    Rows with a NaN are never on the front and dominate nothing; equal rows do not dominate each other."""
    signs = np.array([1.0 if s == "max" else -1.0 for s in senses])
    v = np.asarray(values, dtype=float).reshape(-1, len(signs)) * signs
    ok = ~np.isnan(v).any(axis=1)
    w = v[ok]
    at_least = (w[:, None, :] >= w[None, :, :]).all(axis=2)  # [j, i]: j at least as good as i everywhere
    better = (w[:, None, :] > w[None, :, :]).any(axis=2)  # [j, i]: j strictly better than i somewhere
    mask = np.zeros(len(v), dtype=bool)
    mask[np.flatnonzero(ok)] = ~(at_least & better).any(axis=0)
    return mask


@dataclass
class Plot:
    """A rendered plot: its figure and the points it shows (``x``, ``y``, ``on_front``, ``eligible``)."""

    name: str
    title: str
    figure: Figure
    points: pd.DataFrame
    note: str = ""
    front: list[str] = field(default_factory=list)

    def png(self, dpi: int = 110) -> bytes:
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
        return buffer.getvalue()


def _finished(table: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    rows = table[(table["status"] == "finished") & table[x].notna() & table[y].notna()]
    return rows.assign(x=rows[x].astype(float), y=rows[y].astype(float))


def _labels(points: pd.DataFrame, table: pd.DataFrame) -> pd.Series:
    """Point labels: the cell name without the parts every cell shares (one model, one backend)."""
    drop = {i for i, col in ((0, "model"), (2, "backend")) if table[col].nunique() <= 1}
    return points["cell"].map(lambda c: "/".join(p for i, p in enumerate(str(c).split("/")) if i not in drop))


def _styles(table: pd.DataFrame) -> tuple[dict[str, str], dict[str, str]]:
    import matplotlib as mpl

    palette = mpl.colormaps["tab10"].colors
    colors = {m: mpl.colors.to_hex(palette[i % len(palette)]) for i, m in enumerate(sorted(table["model"].unique()))}
    markers = {b: _MARKERS[i % len(_MARKERS)] for i, b in enumerate(sorted(table["backend"].unique()))}
    return colors, markers


def _new_figure(n_panels: int) -> tuple[Figure, list]:
    # a bare Figure on an Agg canvas: no pyplot state, no display needed, nothing global changed
    figure = Figure(figsize=(7.5 * n_panels, 5.2), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, n_panels, squeeze=False)[0]
    return figure, list(axes)


def _task_axis(table: pd.DataFrame) -> pd.DataFrame:
    """The accuracy axis of each cell: top-1 (%) for image classification, else its task's own metric
    (perplexity, Spearman ρ) — columns ``y_task`` and ``y_label``, with ``y_sense`` max | min from the task."""
    task = table.get("task", pd.Series("", index=table.index)).fillna("").astype(str)
    image = task.isin(["", "image_classification"])
    value = pd.to_numeric(table.get("task_value", pd.Series(np.nan, index=table.index)), errors="coerce")
    direction = table.get("task_direction", pd.Series("", index=table.index)).fillna("").astype(str)
    label = table.get("task_metric", pd.Series("", index=table.index)).fillna("").astype(str)
    return table.assign(y_task=table["top1"].where(image, value),
                        y_label=label.where(~image, "top-1 accuracy (%)").map(
                            lambda n: CATALOG[n].label if n in CATALOG else n),
                        y_sense=np.where(direction == "lower", "min", "max"))


def _front_plot(table: pd.DataFrame, *, name: str, title: str, x: str, xlabel: str, simulated_off_front: bool,
                note: str) -> Plot:
    table = _task_axis(table)
    points = _finished(table, x, "y_task")
    points = points.assign(eligible=~(points["kernel"] == "simulated") if simulated_off_front else True)
    points = points.assign(on_front=False, label=_labels(points, table))
    datasets = sorted(points["dataset"].unique()) or [""]
    figure, axes = _new_figure(len(datasets))
    colors, markers = _styles(table)
    for ax, dataset in zip(axes, datasets, strict=True):
        here = points[points["dataset"] == dataset]
        eligible = here[here["eligible"]]
        # the front is computed per dataset: accuracies on different data are not comparable; each dataset's task
        # says which metric is its accuracy and which way is better (perplexity: lower)
        sense = eligible["y_sense"].iloc[0] if not eligible.empty else "max"
        on_front = pareto_mask(eligible[["y", "x"]], [sense, "min"])
        points.loc[eligible.index[on_front], "on_front"] = True
        for (model, backend), group in here.groupby(["model", "backend"]):
            solid = group[group["eligible"]]
            hollow = group[~group["eligible"]]
            ax.scatter(solid["x"], solid["y"], c=colors[model], marker=markers[backend], s=46, zorder=3)
            ax.scatter(hollow["x"], hollow["y"], facecolors="none", edgecolors=colors[model],
                       marker=markers[backend], s=46, linewidths=1.2, zorder=3)
        front = points.loc[eligible.index[on_front]].sort_values(["x", "y"])
        ax.scatter(front["x"], front["y"], s=180, facecolors="none", edgecolors="black", linewidths=1.4,
                   zorder=4, gid=FRONT_GID)
        if len(front) > 1:
            ax.step(front["x"], front["y"], where="post", color="black", lw=1, ls="--", zorder=2)
        # every point is labelled in small grids; in large ones only the front
        annotate = points.loc[here.index]
        if len(annotate) > 24:
            annotate = annotate[annotate["on_front"]]
        # neighbours in x alternate above/below their point, so close labels overlap less
        for i, (_, row) in enumerate(annotate.sort_values(["x", "y"]).iterrows()):
            ax.annotate(row["label"], (row["x"], row["y"]), textcoords="offset points",
                        xytext=(5, 4 if i % 2 == 0 else -10), fontsize=7)
        if here.empty:
            ax.text(0.5, 0.5, "no finished cell has these figures", ha="center", va="center",
                    transform=ax.transAxes)
        elif here["x"].max() > 10 * here["x"].min() > 0:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(here["y_label"].iloc[0] if not here.empty else "top-1 accuracy (%)")
        ax.set_title(f"{title}" + (f" — {dataset}" if len(datasets) > 1 else ""), fontsize=11)
        ax.grid(True, alpha=0.3)
    handles = [Line2D([], [], ls="", marker="o", color=c, label=m) for m, c in colors.items()]
    handles += [Line2D([], [], ls="", marker=mk, color="gray", label=b) for b, mk in markers.items()]
    if simulated_off_front and (~points["eligible"]).any():
        handles.append(Line2D([], [], ls="", marker="o", markerfacecolor="none", color="gray",
                              label=SIMULATED_LABEL))
    handles.append(Line2D([], [], ls="--", marker="o", markerfacecolor="none", markersize=10, color="black",
                          label="Pareto front"))
    axes[-1].legend(handles=handles, fontsize=8, loc="best")
    front_cells = points.loc[points["on_front"], "cell"].tolist()
    return Plot(name, title, figure, points, note, front_cells)


def accuracy_latency(table: pd.DataFrame) -> Plot:
    """Top-1 vs p50 latency; front over measured kernels (simulated ones hollow, off the front)."""
    return _front_plot(table, name="accuracy_latency", title="Accuracy vs latency", x="p50_ms",
                       xlabel="p50 latency, batch 1 (ms)", simulated_off_front=True,
                       note="Pareto front: highest top-1 for the lowest p50 among measured kernels (fp32, int8, "
                            "int4, mixed). Hollow points ran simulated kernels (float latency plus fake-quant "
                            "overhead) and are kept off the front.")


def accuracy_size(table: pd.DataFrame) -> Plot:
    """Top-1 vs the deployed artifact's size on disk; front over every finished cell."""
    return _front_plot(table, name="accuracy_size", title="Accuracy vs size", x="size_kib",
                       xlabel="deployed artifact on disk (KiB)", simulated_off_front=False,
                       note="Pareto front: highest top-1 for the smallest deployed artifact (all finished cells).")


def accuracy_bits(table: pd.DataFrame) -> Plot:
    """Top-1 vs weight bit-width, one line per model (and dataset) through its best cell at each width."""
    points = _finished(table, "w_bits", "top1")
    points = points.assign(eligible=True, on_front=False, label=points["scheme"])
    figure, (ax,) = _new_figure(1)
    colors, _ = _styles(table)
    methods = {m: _MARKERS[i % len(_MARKERS)] for i, m in enumerate(sorted(points["method"].unique()))}
    several_datasets = points["dataset"].nunique() > 1
    for (model, dataset), group in points.groupby(["model", "dataset"]):
        best = group.groupby("x")["y"].max().sort_index()
        ax.plot(best.index, best.to_numpy(), color=colors[model], lw=1.5,
                label=f"{model}@{dataset}" if several_datasets else model)
        for method, cells in group.groupby("method"):
            ax.scatter(cells["x"], cells["y"], color=colors[model], marker=methods[method], s=40, zorder=3)
    if points.empty:
        ax.text(0.5, 0.5, "no finished cell", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.set_xscale("log", base=2)
        ticks = sorted(points["x"].unique())
        ax.set_xticks(ticks, [f"{t:g}" + (" (FP32)" if t == 32 else "") for t in ticks])
    ax.set_xlabel("weight bit-width")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("Accuracy vs weight bit-width", fontsize=11)
    ax.grid(True, alpha=0.3)
    handles = ax.get_legend_handles_labels()[0]
    handles += [Line2D([], [], ls="", marker=mk, color="gray", label="FP32" if m == "none" else m)
                for m, mk in methods.items()]
    ax.legend(handles=handles, fontsize=8, loc="best")
    return Plot("accuracy_bits", "Accuracy vs weight bit-width", figure, points,
                "One line per model through its most accurate cell at each weight width (any backend); markers "
                "show the quantization method.")


def all_plots(table: pd.DataFrame) -> list[Plot]:
    """Every plot of a comparison table."""
    return [accuracy_latency(table), accuracy_size(table), accuracy_bits(table)]


def write_plots(plots: Sequence[Plot], out_dir: Path) -> dict[str, Path]:
    """Save each plot as ``out_dir/<name>.png``; returns the paths by plot name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for plot in plots:
        paths[plot.name] = out_dir / f"{plot.name}.png"
        paths[plot.name].write_bytes(plot.png())
    return paths
