"""The columns of the comparison table: key, header, meaning, how each is read from an MLflow-shaped frame
(:mod:`qbench.track.query`), display format and which direction is better.

A column that shows one metric takes its label, meaning, scale, format and direction from the metric catalog
(:mod:`qbench.metrics`); the others (identity, scheme, flags, energy with its source) are declared here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from qbench.metrics import ENERGY_SOURCES, as_number, energy_metric, metric, paired_ci, task_result


class ReportError(ValueError):
    """Bad report input (unknown column, malformed filter): printed as one line, exit 2."""


@dataclass(frozen=True)
class Column:
    """A column of the comparison table: its key (CSV header, ``--where``/``--sort`` name), display header,
    meaning, how it is read from the frame, display format and which direction is better."""

    key: str
    header: str
    help: str
    get: Callable[[pd.DataFrame], pd.Series]
    fmt: str = ""  # format spec for display; "" = text
    suffix: str = ""
    better: str | None = None  # "high" | "low": --sort puts the best first

    @property
    def numeric(self) -> bool:
        return bool(self.fmt)


# ------------------------------------------------------------------------------------------ readers
def _series(frame: pd.DataFrame, name: str, text: bool = False) -> pd.Series:
    if name in frame.columns:
        return frame[name]
    return pd.Series("" if text else np.nan, index=frame.index, dtype=object if text else float)


def _num(name: str, scale: float = 1.0) -> Callable[[pd.DataFrame], pd.Series]:
    return lambda f: pd.to_numeric(_series(f, name), errors="coerce").astype(float) * scale


def _text(name: str) -> Callable[[pd.DataFrame], pd.Series]:
    return lambda f: _series(f, name, text=True).fillna("").astype(str).replace({"None": "", "nan": ""})


def _figure(key: str, name: str) -> Column:
    """The column of catalog metric ``name``: a ``metrics.*`` column of the frame, or a figure relative to
    FP32 (its own column, as :func:`qbench.track.query.with_fp32_comparisons` adds it)."""
    m = metric(name)
    get = _num(name) if m.derived else _num(f"metrics.{name}", m.scale)
    return Column(key, m.label, m.help, get, m.fmt, m.suffix, m.better)


def _method(f: pd.DataFrame) -> pd.Series:
    return _text("params.quant.method")(f)


def _weight_bits(f: pd.DataFrame) -> pd.Series:
    bits = _num("params.quant.weights.bits")(f)
    return bits.where(_method(f) != "none", 32.0)  # FP32 reference: 32-bit float weights


def _activation_bits(f: pd.DataFrame) -> pd.Series:
    bits = _num("params.quant.activations.bits")(f)
    return bits.where(~_method(f).isin(["none", "weight_only"]), 32.0)  # activations stay float


def _granularity(f: pd.DataFrame) -> pd.Series:
    gran = _text("params.quant.weights.granularity")(f)
    group = _text("params.quant.weights.group_size")(f)
    gran = gran.where(gran != "per_group", "per_group/" + group)
    return gran.where(_method(f) != "none", "")


def _scheme(f: pd.DataFrame) -> pd.Series:
    tag = _text("tags.scheme")(f)
    from_name = f["cell"].fillna("").astype(str).str.split("/").str[1].fillna("")
    return tag.where(tag != "", from_name)  # skipped cells have no tags of their own: their name says it


def _energy_source(f: pd.DataFrame) -> pd.Series:
    """Measured sources first (nvml, rapl), else the estimate; always shown next to the value."""
    source = pd.Series("", index=f.index, dtype=object)
    for name in reversed(ENERGY_SOURCES):
        has = _num(f"metrics.{energy_metric(name)}")(f).notna()
        source[has] = name
    return source


def _energy(f: pd.DataFrame) -> pd.Series:
    source = _energy_source(f)
    value = pd.Series(np.nan, index=f.index, dtype=float)
    for name in ENERGY_SOURCES:
        value = value.where(source != name, _num(f"metrics.{energy_metric(name)}")(f))
    return value


def _named_by_tag(tag: str) -> Callable[[pd.DataFrame], pd.Series]:
    """Each cell's value of the metric its tag ``tag`` names (tags.task.metric: acc.top1, lm.perplexity, ...)."""

    def get(f: pd.DataFrame) -> pd.Series:
        names = _text(f"tags.{tag}")(f)
        return pd.Series([as_number(row.get(f"metrics.{name}")) if name else None for name, (_, row) in
                          zip(names, f.iterrows(), strict=True)], index=f.index, dtype=float)

    return get


def _accuracy_target(f: pd.DataFrame) -> pd.Series:
    pct = _num("acc_pct_fp32")(f)
    return pd.Series(["" if p != p else "99.9 %" if p >= 99.9 else "99 %" if p >= 99 else "below 99 %" for p in pct],
                     index=f.index, dtype=object)


def _paired_ci(f: pd.DataFrame) -> pd.Series:
    return pd.Series([paired_ci({"speedup.paired_ci95_low": row.get("metrics.speedup.paired_ci95_low"),
                                 "speedup.paired_ci95_high": row.get("metrics.speedup.paired_ci95_high")})
                      for _, row in f.iterrows()], index=f.index, dtype=object)


def _task_result(f: pd.DataFrame) -> pd.Series:
    """``metric value (Δ delta)`` with the task's own metric names: tables that mix tasks stay readable."""
    out = []
    for _, row in f.iterrows():
        metrics = {k[8:]: v for k, v in row.items() if isinstance(k, str) and k.startswith("metrics.")}
        tags = {k[5:]: v for k, v in row.items() if isinstance(k, str) and k.startswith("tags.")}
        out.append(task_result(metrics, tags))
    return pd.Series(out, index=f.index, dtype=object)


def _note(f: pd.DataFrame) -> pd.Series:
    error = _text("tags.qbench.error")(f)
    unstable = np.where(_text("tags.latency.unstable")(f) == "true", "latency unstable", "")
    notes = [("; ".join(p for p in parts if p)) for parts in zip(error, unstable, strict=True)]
    return pd.Series(notes, index=f.index, dtype=object)


COLUMNS: tuple[Column, ...] = (
    Column("cell", "cell", "run name: model/scheme/backend (MLflow run name)", _text("cell")),
    Column("status", "status", "finished | failed | skipped (failed and skipped cells have no figures)",
           _text("status")),
    Column("model", "model", "model name", _text("params.model.name")),
    Column("dataset", "dataset", "dataset name", _text("params.dataset.name")),
    Column("backend", "backend", "runtime that executed the model", _text("params.backend.name")),
    Column("scheme", "scheme", "scheme label derived from the quantization values", _scheme),
    Column("method", "method", "none (FP32) | ptq | dynamic | weight_only | qat", _method),
    Column("w_bits", "W bits", "weight bit-width (32 = float)", _weight_bits, ".0f"),
    Column("a_bits", "A bits", "activation bit-width (32 = float)", _activation_bits, ".0f"),
    Column("granularity", "granularity", "weight quantization granularity", _granularity),
    Column("kernel", "kernel", "what ran: fp32 | simulated (fake-quant in float) | int8 | int4 | mixed",
           _text("kernel")),
    Column("threads", "threads", "intra x inter-op threads", _text("tags.threads")),
    Column("task", "task", "the task the cell measured (tags.task)", _text("tags.task")),
    Column("task_result", "task metric", "the cell's task metric and its change vs FP32, in the task's own terms "
           "(top-1, perplexity, Spearman ρ)", _task_result),
    Column("task_metric", "task metric name", "the name of the cell's task metric (tags.task.metric)",
           _text("tags.task.metric")),
    Column("task_direction", "task direction", "higher | lower: which task metric value is better",
           _text("tags.task.direction")),
    Column("task_value", "task value", "the value of the cell's task metric (tags.task.metric)",
           _named_by_tag("task.metric"), ".4g"),
    Column("task_delta", "task Δ", "the task metric's in-cell change vs FP32 (tags.task.delta_metric)",
           _named_by_tag("task.delta_metric"), "+.4g"),
    _figure("top1", "acc.top1"),
    _figure("delta_fp32_pt", "delta_top1_pt"),
    _figure("acc_pct_fp32", "acc_pct_fp32"),
    Column("accuracy_target", "MLPerf target", "the strictest MLPerf accuracy target the cell meets: 99.9 % or 99 % "
           "of its FP32 cell's task metric (acc_pct_fp32), else 'below 99 %'", _accuracy_target),
    _figure("agree_fp32", "acc.agreement_fp32"),
    _figure("gap_pt", "acc.gap_top1"),
    _figure("agree_sim", "acc.agreement_simulated"),
    Column("flags", "flags", "gap: deployed top-1 more than suite.check.deployment_gap_pt (1) points below its "
           "simulation, or agreement with it below min_agreement_simulated (98 %)", _text("deployment.flags")),
    Column("gap_cause", "gap cause", "why a cell is flagged gap: its figures and the likely cause (ISA path, op mix)",
           _text("deployment.cause")),
    _figure("p50_ms", "latency.p50_ms"),
    _figure("p99_ms", "latency.p99_ms"),
    _figure("speedup", "speedup"),
    Column("speedup_ci", "paired CI", "95 % CI of the paired speed-up (bootstrap over interleaved blocks); empty: "
           "the speed-up is unpaired (two cells' p50s)", _paired_ci),
    _figure("speedup_unpaired", "speedup_unpaired"),
    _figure("throughput", "throughput.samples_per_s"),
    _figure("server_qps", "scenario.server.max_qps"),
    _figure("server_p99_ms", "scenario.server.p99_ms"),
    _figure("offline_sps", "scenario.offline.samples_per_s"),
    _figure("single_stream_p90_ms", "scenario.single_stream.p90_ms"),
    _figure("multi_stream_p99_ms", "scenario.multi_stream.p99_ms"),
    _figure("size_kib", "size.artifact_bytes"),
    _figure("packed_kib", "size.packed_model_bytes"),
    _figure("compression", "size.compression_ratio"),
    _figure("disk_ratio", "size_ratio"),
    _figure("rss_mb", "memory.peak_rss_inference_mb"),
    _figure("rss_load_mb", "memory.peak_rss_load_mb"),
    Column("energy_mj", "energy mJ", "energy per batch-1 inference from the source in the next column",
           _energy, ".3g", better="low"),
    Column("energy_source", "energy src", "nvml / rapl (measured) or estimate (CPU time x watts per core)",
           _energy_source),
    _figure("energy_rapl_mj", energy_metric("rapl")),
    _figure("energy_nvml_mj", energy_metric("nvml")),
    _figure("energy_est_mj", energy_metric("estimate")),
    _figure("gbops", "opcount.bops"),
    _figure("gmacs", "opcount.macs"),
    Column("suite", "suite", "suite the cell belongs to", _text("tags.qbench.suite")),
    Column("note", "note", "error or skip reason; latency stability warning", _note),
    Column("run_id", "run id", "MLflow run id of the cell", _text("run_id")),
    Column("fp32_cell", "FP32 reference", "the FP32 cell of the same suite run that Δ FP32, % of FP32, speed-up "
           "and disk ratio compare with (same model, dataset, backend and measure settings)", _text("fp32_cell")),
)
BY_KEY: dict[str, Column] = {c.key: c for c in COLUMNS}
# what fits a terminal; files get every column (model, backend and scheme are in the cell name)
TERMINAL_COLUMNS = ("cell", "status", "kernel", "task_result", "top1", "delta_fp32_pt", "acc_pct_fp32", "agree_fp32",
                    "gap_pt", "flags", "p50_ms", "p99_ms", "speedup", "speedup_ci", "throughput", "server_qps",
                    "server_p99_ms", "offline_sps", "single_stream_p90_ms", "multi_stream_p99_ms", "size_kib",
                    "compression", "rss_mb", "energy_mj", "energy_source", "gbops")
REPORT_COLUMNS = ("cell", "status", "kernel", "w_bits", "a_bits", *TERMINAL_COLUMNS[3:])
# shown only when a table has cells of another task than image classification (whose metric is top-1's column)
TASK_COLUMNS = ("task_result",)
# shown only when some cell of the table ran that load scenario (measure.scenario)
SCENARIO_COLUMNS = ("server_qps", "server_p99_ms", "offline_sps", "single_stream_p90_ms", "multi_stream_p99_ms")
# shown only when some cell of the table has a value (a paired speed-up: quantized cells on real backends)
OPTIONAL_COLUMNS = (*SCENARIO_COLUMNS, "speedup_ci")
ALL_COLUMNS = tuple(c.key for c in COLUMNS)


def select_columns(spec: str | None, default: Sequence[str]) -> list[str]:
    """``--columns``: ``default``, ``all`` or a comma-separated list of keys; energy values always come with
    their source next to them (measured and estimated energy may share a column only that way)."""
    if not spec or spec == "default":
        keys = list(default)
    elif spec == "all":
        keys = list(ALL_COLUMNS)
    else:
        keys = [k.strip() for k in spec.split(",") if k.strip()]
        unknown = [k for k in keys if k not in BY_KEY]
        if unknown:
            raise ReportError(f"--columns: unknown column {unknown[0]!r}; valid: default, all, "
                              f"{', '.join(ALL_COLUMNS)}")
    if "energy_mj" in keys and "energy_source" not in keys:
        keys.insert(keys.index("energy_mj") + 1, "energy_source")
    return keys


def fitting(keys: Sequence[str], table: pd.DataFrame) -> list[str]:
    """``keys`` without the task columns when every cell of ``table`` is an image classifier (top-1 has its own
    columns; such tables look as they did before tasks existed), and without the load-scenario columns no cell
    has a figure for (and the paired-CI column when no cell has a paired speed-up)."""
    tasks = set(table["task"]) if "task" in table.columns else set()
    hidden = set(TASK_COLUMNS) if tasks <= {"", "image_classification"} else set()
    hidden |= {k for k in OPTIONAL_COLUMNS
               if k not in table.columns or table[k].replace("", np.nan).isna().all()}
    return [k for k in keys if k not in hidden]


def format_value(column: Column, value: Any) -> str:
    """Display text of one cell: ``—`` for a missing figure."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
        return "—"
    if column.numeric:
        return format(float(value), column.fmt) + column.suffix
    return str(value)
