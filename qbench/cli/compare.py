"""``qbench compare`` (comparison table from MLflow: terminal, markdown, CSV, HTML) and ``qbench ui`` (the MLflow
UI on the local store). Bad input: one line on stderr naming the valid choices, exit 2."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from qbench.cli.common import DEFAULT_EXPERIMENT, DEFAULT_URI, OneLineParser, UsageError, fail
from qbench.report import columns, compare
from qbench.report.columns import ReportError
from qbench.track.uri import NoStore, require_store

if TYPE_CHECKING:
    import pandas as pd

FORMATS = ("table", "md", "csv", "html")
_SUFFIX_FORMATS = {".md": "md", ".markdown": "md", ".csv": "csv", ".html": "html", ".htm": "html", ".txt": "table"}
# what a command reports in one line, exit 2
_BAD_INPUT = (UsageError, ReportError, NoStore)


# -------------------------------------------------------------------------------------------- compare
def compare_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="qbench compare",
        description="Compare the cells of a suite run (default: the latest one) read back from MLflow.",
        epilog='examples:  qbench compare --suite vision --where "acc_pct_fp32 >= 99" --sort speedup\n'
               "           qbench compare --format html --out report.html\n"
               + textwrap.fill(f"columns: {', '.join(columns.ALL_COLUMNS)}", 100, subsequent_indent="  "),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    select = parser.add_argument_group("selection (default: the latest suite run of the experiment)")
    select.add_argument("--run-id", help="suite (parent) run id")
    select.add_argument("--suite", help="the latest run of this suite")
    select.add_argument("--all", action="store_true", dest="all_runs",
                        help="every cell run of the experiment (suite cells and single runs)")
    select.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="MLflow experiment (default: %(default)s)")
    select.add_argument("--tracking-uri", default=DEFAULT_URI, help="MLflow tracking URI (default: %(default)s)")
    output = parser.add_argument_group("output")
    output.add_argument("--format", choices=FORMATS, help="table (terminal, default), md, csv or html (the "
                        "self-contained report with plots); default: from --out's suffix, else table")
    output.add_argument("--out", type=Path, help="write to this file instead of standard output")
    output.add_argument("--columns", help="default, all, or a comma-separated list of column keys "
                        "(terminal default: a compact set; md/csv: all)")
    output.add_argument("--where", action="append", default=[], metavar="COND",
                        help='keep rows where COLUMN OP VALUE holds (OP: >= <= > < == !=), e.g. '
                             '"acc_pct_fp32 >= 99"; repeat or join with "and"')
    output.add_argument("--sort", metavar="COLUMN", help="sort by a column, best first (speedup: highest, "
                        "p50_ms: lowest)")
    output.add_argument("--reverse", action="store_true", help="reverse the --sort order")
    output.add_argument("--plots", type=Path, metavar="DIR", help="also write the plots (PNG) into DIR")
    return parser


def _choices(uri: str, experiment: str) -> str:
    """What the store holds, to name the valid choices after a selection matched nothing."""
    from qbench.track import query

    try:
        experiments = query.experiment_names(uri)
        if experiment not in experiments:
            return f"; experiments in this store: {', '.join(experiments) or 'none'}"
        suites = query.suite_names(uri, experiment)
        if not suites:
            return f"; experiment {experiment!r} has no suite run (--all compares every cell run)"
        return f"; suites in experiment {experiment!r}: {', '.join(suites)}"
    except Exception:
        return ""


def _terminal_width() -> int | None:
    """None (rich decides) on a terminal or when COLUMNS says; else wide enough for the compact table."""
    return None if sys.stdout.isatty() or os.environ.get("COLUMNS", "").isdigit() else 220


def _print_table(table: pd.DataFrame, keys: list[str], meta: dict[str, str], file: TextIO | None = None) -> None:
    from rich.console import Console
    from rich.measure import Measurement

    console = Console(file=file, width=220 if file is not None else _terminal_width(),
                      no_color=file is not None, highlight=False)
    title = " · ".join(v for k, v in meta.items() if k in ("suite", "suite run (MLflow parent)", "started",
                                                           "experiment"))
    rendered = compare.rich_table(table, keys, title=title or None)
    needed = Measurement.get(console, console.options.update_width(100_000), rendered).maximum
    if needed > console.width:  # never crop a figure: let the terminal wrap the lines instead
        console.width = needed
        if file is None:
            print("qbench compare: the table is wider than the terminal; choose columns with --columns",
                  file=sys.stderr)
    console.print(rendered)
    console.print(compare.status_counts(table), markup=False)
    for _, row in table[table["status"] != "finished"].iterrows():
        console.print(f"  {row['status']} {row['cell']}: {row['note'] or 'no reason recorded'}", markup=False)
    for line in compare.flagged_lines(table):
        console.print(f"  {line}", markup=False, soft_wrap=True)
    if "speedup" in keys and (table["kernel"] == "simulated").any():
        console.print("  speed-up: none for simulated kernels (their latency is float latency + fake-quant)",
                      markup=False)


def run_compare(ns: argparse.Namespace) -> int:
    from qbench.track import query

    require_store(ns.tracking_uri)
    fmt = ns.format or (_SUFFIX_FORMATS.get(ns.out.suffix.lower(), "table") if ns.out else "table")
    default_keys = {"table": columns.TERMINAL_COLUMNS, "html": columns.REPORT_COLUMNS}.get(fmt, columns.ALL_COLUMNS)
    if ns.all_runs and fmt == "table":
        default_keys = ("suite", *default_keys)
    keys = columns.select_columns(ns.columns, default_keys)
    compare.parse_where(ns.where)  # bad filters and sort keys fail before MLflow is read
    if ns.sort:
        compare.check_sort_key(ns.sort)
    try:
        table, meta = compare.load(ns.tracking_uri, run_id=ns.run_id, suite=ns.suite, experiment=ns.experiment,
                                   all_runs=ns.all_runs)
    except query.NoRunsFound as exc:
        raise ReportError(str(exc) + _choices(ns.tracking_uri, ns.experiment)) from None
    except Exception as exc:  # a tracking server that is down or refuses: one line, not a traceback
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        print(f"qbench compare: could not read MLflow at {ns.tracking_uri}: {type(exc).__name__}: {first}",
              file=sys.stderr)
        return 1
    keys = columns.fitting(keys, table)
    table = compare.apply_where(table, ns.where)
    if ns.sort:
        table = compare.sort_table(table, ns.sort, ns.reverse)
    if table.empty:
        print(f"qbench compare: no cell matches {' and '.join(ns.where)}", file=sys.stderr)

    if ns.plots is not None:
        from qbench.report import plots

        for path in plots.write_plots(plots.all_plots(table), ns.plots).values():
            print(f"plot: {path}", file=sys.stderr)
    if ns.out is not None:
        try:
            ns.out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ReportError(f"--out {ns.out}: {exc.strerror or exc}") from None
    if fmt == "table":
        if ns.out is None:
            _print_table(table, keys, meta)
        else:
            with ns.out.open("w") as handle:
                _print_table(table, keys, meta, file=handle)
    else:
        if fmt == "md":
            text = compare.to_markdown(table, keys)
        elif fmt == "csv":
            text = compare.to_csv(table, keys)
        else:
            from qbench.report import html, plots

            title = f"qbench report: suite {meta['suite']}" if "suite" in meta else "qbench report"
            rendered = [(plot, plot.png()) for plot in plots.all_plots(table)]
            text = html.render(table, keys=keys, plots=rendered, meta=meta, title=title)
        if ns.out is None:
            sys.stdout.write(text)
        else:
            ns.out.write_text(text)
    if ns.out is not None:
        print(f"wrote {ns.out} ({fmt}, {len(table)} cells)")
    return 0


def cmd_compare(args: list[str]) -> int:
    """``qbench compare``: exit 0; 2 on bad input or nothing to compare; 1 when MLflow cannot be read."""
    try:
        return run_compare(compare_parser().parse_args(args))
    except _BAD_INPUT as exc:
        return fail("compare", str(exc))


# ------------------------------------------------------------------------------------------------- ui
def ui_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="qbench ui", description="Serve the MLflow UI for the local store on 127.0.0.1 "
                     "until Ctrl-C; print (--open: open) the latest suite run's runs table.")
    parser.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1 (default: %(default)s)")
    parser.add_argument("--tracking-uri", default=DEFAULT_URI, help="local store (default: %(default)s)")
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT,
                        help="experiment whose latest suite run is shown (default: %(default)s)")
    parser.add_argument("--open", action="store_true", dest="open_browser",
                        help="open the latest suite run's runs table in the web browser")
    return parser


def cmd_ui(args: list[str]) -> int:
    """``qbench ui``: the MLflow server's exit status (0 after Ctrl-C), 2 on bad input."""
    from qbench.report import ui

    try:
        ns = ui_parser().parse_args(args)
        if not 0 < ns.port < 65536:
            raise ReportError(f"--port {ns.port}: must be in 1..65535")
        return ui.serve(ns.tracking_uri, ns.port, ns.experiment, ns.open_browser)
    except _BAD_INPUT as exc:
        return fail("ui", str(exc))
