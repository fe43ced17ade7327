"""The comparison table: one row per cell, one column per figure, derived from the MLflow-shaped frame of
:mod:`qbench.track.query` — the same derivation for ``qbench compare`` and for the end-of-suite report.

Values are kept raw (floats, NaN where a figure does not exist); formatting happens only when rendering,
so CSV output carries the exact figures MLflow holds (percentages and KiB are the only rescalings).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from qbench.config import CheckConfig
from qbench.measure.gap import deployment_gap, split_row
from qbench.track import query

log = logging.getLogger("qbench.report")
GAP_FLAG = "gap"  # the flags column's value for a cell far below its simulation (qbench.measure.gap)
GAP_MARK = "⚠ gap"  # how terminal and HTML show it
# the check settings that judge a row: one for every row, or one per suite name (``tags.qbench.suite``)
Settings = CheckConfig | Callable[[str], CheckConfig] | None


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


def _metric(name: str, scale: float = 1.0) -> Callable[[pd.DataFrame], pd.Series]:
    return _num(f"metrics.{name}", scale)


def _text(name: str) -> Callable[[pd.DataFrame], pd.Series]:
    return lambda f: _series(f, name, text=True).fillna("").astype(str).replace({"None": "", "nan": ""})


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


# measured sources first (nvml: the GPU board that ran the model; rapl: the CPU package), else the estimate;
# the source is always its own column, shown next to the value
ENERGY_SOURCES = ("nvml", "rapl", "estimate")


def _energy_source(f: pd.DataFrame) -> pd.Series:
    source = pd.Series("", index=f.index, dtype=object)
    for name in reversed(ENERGY_SOURCES):
        has = _metric(f"energy.{name}_mj_per_inference")(f).notna()
        source[has] = name
    return source


def _energy(f: pd.DataFrame) -> pd.Series:
    source = _energy_source(f)
    value = pd.Series(np.nan, index=f.index, dtype=float)
    for name in ENERGY_SOURCES:
        value = value.where(source != name, _metric(f"energy.{name}_mj_per_inference")(f))
    return value


def _note(f: pd.DataFrame) -> pd.Series:
    error = _text("tags.qbench.error")(f)
    unstable = np.where(_text("tags.latency.unstable")(f) == "true", "latency unstable", "")
    notes = [("; ".join(p for p in parts if p)) for parts in zip(error, unstable, strict=True)]
    return pd.Series(notes, index=f.index, dtype=object)


def with_deployment_flags(frame: pd.DataFrame, settings: Settings = None) -> pd.DataFrame:
    """Add ``deployment.flags`` (``gap`` for a flagged cell) and ``deployment.cause`` (figures, what was breached
    and the likely cause) to an MLflow-shaped frame, judged by :func:`qbench.measure.gap.deployment_gap` with the
    thresholds of ``settings`` (a callable gets the row's suite name, "" outside a suite)."""
    frame = frame.copy()
    flags, causes = [], []
    for _, row in frame.iterrows():
        chosen = settings(str(row.get("tags.qbench.suite") or "")) if callable(settings) else settings
        verdict = deployment_gap(*split_row(row), chosen) if row.get("status") == "finished" else None
        flagged = verdict is not None and verdict.flagged
        flags.append(GAP_FLAG if flagged else "")
        causes.append(verdict.explanation if verdict is not None and flagged else "")
    frame["deployment.flags"] = pd.Series(flags, index=frame.index, dtype=object)
    frame["deployment.cause"] = pd.Series(causes, index=frame.index, dtype=object)
    return frame


@lru_cache(maxsize=64)
def suite_settings(suite: str) -> CheckConfig:
    """The ``suite.check`` section of a suite's YAML (the defaults outside a suite, for a suite whose YAML is not
    here, or whose section is invalid: then with a warning)."""
    if not suite:
        return CheckConfig()
    from qbench.regress.baseline import BaselineError, check_settings

    try:
        return check_settings(suite)
    except BaselineError as exc:
        log.warning("deployment-gap flags use the default thresholds: %s", exc)
        return CheckConfig()


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
    Column("top1", "top-1 %", "top-1 accuracy on the evaluation split (acc.top1 x 100)", _metric("acc.top1", 100),
           ".2f", better="high"),
    Column("delta_fp32_pt", "Δ FP32 pt", "top-1 minus the FP32 cell's top-1 (same model), percentage points",
           _num("delta_top1_pt"), "+.2f", better="high"),
    Column("acc_pct_fp32", "% of FP32", "top-1 as a percentage of the FP32 cell's top-1", _num("acc_pct_fp32"),
           ".2f", better="high"),
    Column("agree_fp32", "agree %", "share of samples whose prediction equals FP32's (acc.agreement_fp32 x 100)",
           _metric("acc.agreement_fp32", 100), ".2f", better="high"),
    Column("gap_pt", "gap pt", "deployment gap: deployed minus simulated top-1, points (real backends only)",
           _metric("acc.gap_top1", 100), "+.2f", better="high"),
    Column("agree_sim", "agree sim %", "share of samples whose deployed prediction equals the simulation's "
           "(acc.agreement_simulated x 100; real backends only)", _metric("acc.agreement_simulated", 100), ".2f",
           better="high"),
    Column("flags", "flags", "gap: deployed top-1 more than suite.check.deployment_gap_pt (1) points below its "
           "simulation, or agreement with it below min_agreement_simulated (98 %)", _text("deployment.flags")),
    Column("gap_cause", "gap cause", "why a cell is flagged gap: its figures and the likely cause (ISA path, op mix)",
           _text("deployment.cause")),
    Column("p50_ms", "p50 ms", "median batch-1 latency", _metric("latency.p50_ms"), ".3f", better="low"),
    Column("p99_ms", "p99 ms", "99th percentile batch-1 latency", _metric("latency.p99_ms"), ".3f", better="low"),
    Column("speedup", "speed-up", "FP32 p50 / p50 on the same backend in the same suite run; none for simulated "
           "kernels (their latency is float latency)", _num("speedup"), ".2f", "x", better="high"),
    Column("throughput", "samples/s", "throughput at the throughput batch size",
           _metric("throughput.samples_per_s"), ".0f", better="high"),
    Column("size_kib", "size KiB", "deployed artifact on disk (size.artifact_bytes / 1024)",
           _metric("size.artifact_bytes", 1 / 1024), ".1f", better="low"),
    Column("packed_kib", "packed KiB", "weights bit-packed at their width + fp32 scales (size.packed_model_bytes "
           "/ 1024)", _metric("size.packed_model_bytes", 1 / 1024), ".1f", better="low"),
    Column("compression", "compr.", "FP32 weight bytes / packed bytes (size.compression_ratio)",
           _metric("size.compression_ratio"), ".2f", "x", better="high"),
    Column("disk_ratio", "disk ratio", "FP32 cell's artifact bytes / this artifact's bytes", _num("size_ratio"),
           ".2f", "x", better="high"),
    Column("rss_mb", "RSS MB", "peak RSS of the worker during inference (memory.peak_rss_inference_mb)",
           _metric("memory.peak_rss_inference_mb"), ".0f", better="low"),
    Column("rss_load_mb", "RSS load MB", "peak RSS while loading and quantizing", _metric("memory.peak_rss_load_mb"),
           ".0f", better="low"),
    Column("energy_mj", "energy mJ", "energy per batch-1 inference from the source in the next column",
           _energy, ".3g", better="low"),
    Column("energy_source", "energy src", "nvml / rapl (measured) or estimate (CPU time x watts per core)",
           _energy_source),
    Column("energy_rapl_mj", "RAPL mJ", "measured, CPU package (energy.rapl_mj_per_inference)",
           _metric("energy.rapl_mj_per_inference"), ".3g", better="low"),
    Column("energy_nvml_mj", "NVML mJ", "measured, GPU board (energy.nvml_mj_per_inference)",
           _metric("energy.nvml_mj_per_inference"), ".3g", better="low"),
    Column("energy_est_mj", "est. mJ", "estimated from CPU time (energy.estimate_mj_per_inference)",
           _metric("energy.estimate_mj_per_inference"), ".3g", better="low"),
    Column("gbops", "GBOPs", "bit operations per sample / 1e9 (MACs x weight bits x activation bits)",
           _metric("opcount.bops", 1e-9), ".3g", better="low"),
    Column("gmacs", "GMACs", "multiply-accumulates per sample / 1e9", _metric("opcount.macs", 1e-9), ".3g",
           better="low"),
    Column("suite", "suite", "suite the cell belongs to", _text("tags.qbench.suite")),
    Column("note", "note", "error or skip reason; latency stability warning", _note),
    Column("run_id", "run id", "MLflow run id of the cell", _text("run_id")),
)
BY_KEY: dict[str, Column] = {c.key: c for c in COLUMNS}
# what fits a terminal; files get every column (model, backend and scheme are in the cell name)
TERMINAL_COLUMNS = ("cell", "status", "kernel", "top1", "delta_fp32_pt", "acc_pct_fp32", "agree_fp32", "gap_pt",
                    "flags", "p50_ms", "p99_ms", "speedup", "throughput", "size_kib", "compression", "rss_mb",
                    "energy_mj", "energy_source", "gbops")
REPORT_COLUMNS = ("cell", "status", "kernel", "w_bits", "a_bits", *TERMINAL_COLUMNS[3:])
ALL_COLUMNS = tuple(c.key for c in COLUMNS)


# ------------------------------------------------------------------------------------------- the table
def comparison_table(frame: pd.DataFrame, settings: Settings = None) -> pd.DataFrame:
    """The comparison table of a frame from :mod:`qbench.track.query` that already carries the FP32-relative
    figures (``with_fp32_comparisons*``): one row per cell, every column of :data:`COLUMNS`, default order.
    ``settings``: the check thresholds that flag deployment gaps (see :func:`with_deployment_flags`)."""
    if frame.empty:
        return pd.DataFrame({c.key: pd.Series(dtype=float if c.numeric else object) for c in COLUMNS})
    frame = with_deployment_flags(frame, settings)
    table = pd.DataFrame({c.key: c.get(frame).to_numpy() for c in COLUMNS})
    return default_order(table)


def default_order(table: pd.DataFrame) -> pd.DataFrame:
    """Model, dataset, backend; within a group the FP32 reference first, then by weight bits (high first)."""
    keys = table.assign(_ref=table["method"] != "none", _bits=-table["w_bits"].fillna(0))
    order = keys.sort_values(["model", "dataset", "backend", "_ref", "_bits", "cell"], kind="stable").index
    return table.loc[order].reset_index(drop=True)


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


# ------------------------------------------------------------------------------------ filter and sort
_CONDITION = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(>=|<=|==|!=|=|>|<)\s*(.*?)\s*$")
_OPS: dict[str, Callable[[Any, Any], Any]] = {
    ">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, "<": lambda a, b: a < b,
    "==": lambda a, b: a == b, "=": lambda a, b: a == b, "!=": lambda a, b: a != b,
}


def _unknown_column(what: str, key: str) -> ReportError:
    return ReportError(f"{what}: unknown column {key!r}; valid: {', '.join(ALL_COLUMNS)}")


def parse_where(conditions: Sequence[str]) -> list[tuple[str, str, str | float]]:
    """``--where`` conditions as (column, operator, value): ``COLUMN OP VALUE`` with OP one of
    >= <= > < == != (several per string joined with ``and``); numbers for numeric columns, == / != for text."""
    parsed: list[tuple[str, str, str | float]] = []
    for text in conditions:
        for part in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE):
            match = _CONDITION.match(part)
            if not match:
                raise ReportError(f"--where {part!r}: expected COLUMN OP VALUE with OP one of >= <= > < == != "
                                  "(e.g. \"acc_pct_fp32 >= 99\")")
            key, op, raw = match.groups()
            if key not in BY_KEY:
                raise _unknown_column(f"--where {part!r}", key)
            value = raw.strip("'\"")
            if BY_KEY[key].numeric:
                try:
                    parsed.append((key, op, float(value)))
                except ValueError:
                    raise ReportError(f"--where {part!r}: {key} is numeric, {value!r} is not a number") from None
            elif op in ("=", "==", "!="):
                parsed.append((key, op, value))
            else:
                raise ReportError(f"--where {part!r}: {key} is text; use == or !=")
    return parsed


def apply_where(table: pd.DataFrame, conditions: Sequence[str]) -> pd.DataFrame:
    """Keep the rows that satisfy every condition (see :func:`parse_where`). A missing figure (NaN)
    satisfies no numeric condition."""
    mask = pd.Series(True, index=table.index)
    for key, op, value in parse_where(conditions):
        if isinstance(value, float):
            mask &= _OPS[op](table[key].astype(float), value).fillna(False).astype(bool)
        else:
            mask &= _OPS[op](table[key].astype(str), value)
    return table[mask].reset_index(drop=True)


def check_sort_key(key: str) -> None:
    if key not in BY_KEY:
        raise _unknown_column("--sort", key)


def sort_table(table: pd.DataFrame, key: str, reverse: bool = False) -> pd.DataFrame:
    """Best first for figures with a direction (``speedup``: highest first, ``p50_ms``: lowest first), else
    ascending; ``reverse`` flips it. Missing figures always go last."""
    check_sort_key(key)
    ascending = BY_KEY[key].better != "high"
    if reverse:
        ascending = not ascending
    return table.sort_values(key, ascending=ascending, na_position="last", kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------------------------- render
def format_value(column: Column, value: Any) -> str:
    """Display text of one cell: ``—`` for a missing figure."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
        return "—"
    if column.numeric:
        return format(float(value), column.fmt) + column.suffix
    return str(value)


def formatted(table: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """The table as display strings, headed by the display headers."""
    return pd.DataFrame({BY_KEY[k].header: [format_value(BY_KEY[k], v) for v in table[k]] for k in keys})


def to_markdown(table: pd.DataFrame, keys: Sequence[str]) -> str:
    text = formatted(table, keys).to_markdown(index=False, disable_numparse=True,
                                              colalign=["right" if BY_KEY[k].numeric else "left" for k in keys])
    return text + "\n"


def to_csv(table: pd.DataFrame, keys: Sequence[str]) -> str:
    """Raw values (full precision, empty where a figure is missing), headed by the column keys."""
    return table[list(keys)].to_csv(index=False)


STATUS_COLORS = {"finished": "green", "failed": "red", "skipped": "yellow"}


def rich_table(table: pd.DataFrame, keys: Sequence[str], title: str | None = None) -> Any:
    """A rich Table of the given columns (status colored)."""
    from rich import box
    from rich.table import Table

    out = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for key in keys:
        column = BY_KEY[key]
        # figures and the cell name never wrap (a number split over two lines misreads); headers and text may
        out.add_column(column.header, justify="right" if column.numeric else "left", overflow="fold",
                       no_wrap=column.numeric or key == "cell")
    for _, row in table.iterrows():
        cells = []
        for key in keys:
            text = format_value(BY_KEY[key], row[key]).replace("[", r"\[")
            if key == "status":
                text = f"[{STATUS_COLORS.get(row[key], 'white')}]{text}[/]"
            elif key == "flags" and row[key] == GAP_FLAG:
                text = f"[bold red]{GAP_MARK}[/]"
            cells.append(text)
        out.add_row(*cells)
    return out


def status_counts(table: pd.DataFrame) -> str:
    counts = table["status"].value_counts().to_dict()
    parts = [f"{counts.get(s, 0)} {s}" for s in ("finished", "failed", "skipped")]
    return f"{len(table)} cells: {', '.join(parts)}"


# --------------------------------------------------------------------------------------------- loading
def suite_meta(parent: Any, uri: str) -> dict[str, str]:
    """What the report says about the suite run it shows."""
    tags = parent.data.tags
    host = " / ".join(t for t in (tags.get("qbench.host"), tags.get("qbench.cpu")) if t)
    meta = {"suite": tags.get("qbench.suite", ""), "suite run (MLflow parent)": parent.info.run_id,
            "started": tags.get("qbench.started_at", ""), "git sha": tags.get("qbench.git_sha", "")[:12],
            "host": host, "host id": tags.get("qbench.host_id", ""), "run dir": tags.get("qbench.run_dir", ""),
            "tracking uri": uri}
    return {k: v for k, v in meta.items() if v}


def load(uri: str, *, run_id: str | None = None, suite: str | None = None, experiment: str | None = None,
         all_runs: bool = False) -> tuple[pd.DataFrame, dict[str, str]]:
    """The comparison table of one suite run (``run_id``, else the latest of ``suite``, else the latest of
    any suite) or, with ``all_runs``, of every cell run of ``experiment``; and what it shows (metadata)."""
    if all_runs:
        frame = query.experiment_cell_runs(uri, experiment or "qbench")
        meta = {"experiment": experiment or "qbench", "tracking uri": uri}
        if frame.empty:
            raise query.NoRunsFound(f"no cell runs in experiment {experiment!r} at {uri}")
    else:
        parent = query.find_suite_run(uri, run_id=run_id, suite=suite, experiment=experiment)
        frame = query.cell_runs(uri, parent.info.run_id)
        meta = suite_meta(parent, uri)
        if frame.empty:
            raise query.NoRunsFound(f"run {parent.info.run_id} has no cell runs (is it a suite run?)")
    # each row is judged by its own suite's check thresholds (one suite, or several with --all)
    table = comparison_table(query.with_fp32_comparisons_per_suite_run(query.latest_per_cell(frame)), suite_settings)
    return table, meta


def flagged_lines(table: pd.DataFrame) -> list[str]:
    """One line per flagged cell: ``⚠ gap cell: figures; breaches; likely cause: ...``."""
    return [f"{GAP_MARK} {row['cell']}: {row['gap_cause']}" for _, row in table.iterrows()
            if row.get("flags") == GAP_FLAG]
