"""The comparison table: one row per cell, one column per figure (:mod:`qbench.report.columns`), derived from
the MLflow-shaped frame of :mod:`qbench.track.query` — the same derivation for ``qbench compare`` and for the
end-of-suite report; its filters, sort order and renderings (markdown, CSV, terminal).

Values are kept raw (floats, NaN where a figure does not exist); formatting happens only when rendering,
so CSV output carries the exact figures MLflow holds (percentages and KiB are the only rescalings).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import pandas as pd

from qbench.config import CheckConfig
from qbench.measure.gap import deployment_gap, split_row
from qbench.report.columns import ALL_COLUMNS, BY_KEY, COLUMNS, ReportError, format_value
from qbench.track import query

log = logging.getLogger("qbench.report")
GAP_FLAG = "gap"  # the flags column's value for a cell far below its simulation (qbench.measure.gap)
GAP_MARK = "⚠ gap"  # how terminal and HTML show it
# the check settings that judge a row: one for every row, or one per suite name (``tags.qbench.suite``)
Settings = CheckConfig | Callable[[str], CheckConfig] | None


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
    from qbench.config.suite_check import SuiteSettingsError, check_settings

    try:
        return check_settings(suite)
    except SuiteSettingsError as exc:
        log.warning("deployment-gap flags use the default thresholds: %s", exc)
        return CheckConfig()


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
