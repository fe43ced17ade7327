"""``qbench check`` and ``qbench baseline``: argument parsing, then baseline / gates / reports.

Exit status of ``qbench check``: 0 no gate failed (warnings allowed), 1 a regression, 2 a usage error, no
baseline or no suite run. Without a baseline the run's own gates (deployment gap) are still checked: a failing
one exits 1. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from qbench.cli.common import DEFAULT_EXPERIMENT, DEFAULT_URI, OneLineParser, UsageError, fail
from qbench.track.uri import NoStore, require_store


def _add_source_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", required=True, help="suite name (suites/NAME.yaml)")
    parser.add_argument("--run", metavar="ID", help="MLflow run id of the suite (parent) run; default: the latest "
                        "run of the suite")
    parser.add_argument("--tracking-uri", default=DEFAULT_URI, help=f"MLflow tracking URI (default {DEFAULT_URI})")
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT,
                        help=f"MLflow experiment (default {DEFAULT_EXPERIMENT})")
    parser.add_argument("--baselines-dir", metavar="DIR", help="where <suite>.json lives (default: "
                        "$QBENCH_BASELINES_DIR, else suites/baselines/ next to the suite's YAML)")


def _parse(parser: argparse.ArgumentParser, args: list[str]) -> argparse.Namespace | int:
    """Parsed arguments, or the exit status (0 after --help, 2 on a usage error, reported in one line)."""
    try:
        return parser.parse_args(args)
    except UsageError as exc:
        return fail(parser.prog.removeprefix("qbench "), str(exc))
    except SystemExit as exc:  # --help
        return int(exc.code or 0)


def _suite_run(ns: argparse.Namespace) -> Any:
    """The suite (parent) run to read: ``--run``, else the latest run of ``--suite``."""
    from qbench.track.query import find_suite_run

    require_store(ns.tracking_uri)  # looking into a missing SQLite store would create an empty one
    parent = find_suite_run(ns.tracking_uri, run_id=ns.run, suite=None if ns.run else ns.suite,
                            experiment=None if ns.run else ns.experiment)
    tags = parent.data.tags
    if tags.get("qbench.role") != "suite":
        raise UsageError(f"run {parent.info.run_id} is not a suite run (no tag qbench.role=suite)")
    if tags.get("qbench.suite") != ns.suite:
        raise UsageError(f"run {parent.info.run_id} is a run of suite {tags.get('qbench.suite')!r}, not {ns.suite!r}")
    return parent


def _run_errors() -> tuple[type[Exception], ...]:
    from qbench.regress.baseline import BaselineError
    from qbench.track.query import NoRunsFound

    return UsageError, BaselineError, NoRunsFound, NoStore


# ---------------------------------------------------------------------------------------------- check
def cmd_check(args: list[str]) -> int:
    """``qbench check --suite NAME [--run ID]``: compare a suite run with the suite's baseline."""
    parser = OneLineParser(
        prog="qbench check", description="Compare a suite run (default: the latest) with the suite's baseline: "
        "accuracy, latency, memory, size and status gates; and check the run's deployment gap (real backends vs "
        "their simulation, no baseline needed). Exit 0 pass (warnings allowed), 1 regression, 2 usage error / no "
        "baseline / no suite run.")
    _add_source_options(parser)
    parser.add_argument("--junit", metavar="PATH", type=Path, help="also write JUnit XML (one test case per gate)")
    parser.add_argument("--summary", metavar="PATH", type=Path,
                        help="markdown summary (default results/check/<suite>/summary.md)")
    parser.add_argument("--missing-baseline", choices=("fail", "warn"), default="fail",
                        help="without a baseline: fail (exit 2, default) or warn and exit with the run's own gates' "
                             "status (a new suite's first nightly runs)")
    ns = _parse(parser, args)
    if isinstance(ns, int):
        return ns
    try:
        return _check(ns)
    except _run_errors() as exc:
        return fail("check", str(exc))


def _check(ns: argparse.Namespace) -> int:
    from qbench.regress import baseline as bl
    from qbench.regress.gates import evaluate, exit_status, run_gates
    from qbench.regress.junit import write_junit
    from qbench.regress.report import console, print_report, write_markdown

    path = bl.baseline_path(ns.suite, ns.baselines_dir)
    # without a baseline the run's own gates (deployment gap) are still checked; the missing baseline is then
    # reported (exit 2) unless one of them failed (exit 1: a regression outranks a missing baseline)
    missing: bl.BaselineError | None = None
    baseline: dict[str, Any] | None = None
    try:
        baseline = bl.read_baseline(path)
    except bl.BaselineError as exc:
        if path.is_file():  # unreadable or another schema: an error, not a missing baseline
            raise
        missing = exc
    settings = bl.check_settings(ns.suite)
    try:
        parent = _suite_run(ns)
    except _run_errors():
        if missing is not None:
            raise missing from None
        raise
    run = bl.run_snapshot(ns.tracking_uri, parent, with_samples=baseline is not None)
    if baseline is not None:
        gates = evaluate(baseline, run, settings)
    else:
        gates = run_gates(run, settings)
        if not gates and missing is not None and ns.missing_baseline == "fail":
            raise missing  # nothing the run can answer alone (no real-backend cell)
    info = {"suite": ns.suite, "run": run, "baseline": baseline, "baseline_path": str(path)}
    print_report(gates, info)
    summary = ns.summary or Path("results") / "check" / ns.suite / "summary.md"
    write_markdown(summary, gates, info)
    console.print(f"summary: {summary}", highlight=False, markup=False, soft_wrap=True)
    if ns.junit:
        write_junit(ns.junit, gates, suite=ns.suite,
                    properties={"suite_run": run["run_id"], "baseline": str(path),
                                "baseline_run": ((baseline or {}).get("source") or {}).get("run_id") or "",
                                "host_id": (run.get("host") or {}).get("host_id") or ""})
        console.print(f"JUnit XML: {ns.junit}", highlight=False, markup=False, soft_wrap=True)
    status = exit_status(gates)
    if missing is not None and status == 0:
        if ns.missing_baseline == "fail":
            raise missing
        console.print(f"warning: {missing}: only the run's own gates were checked", highlight=False, markup=False,
                      soft_wrap=True)
    return status


# ------------------------------------------------------------------------------------------- baseline
def cmd_baseline(args: list[str]) -> int:
    """``qbench baseline update --suite NAME [--run ID]`` | ``qbench baseline show --suite NAME``."""
    parser = OneLineParser(prog="qbench baseline",
                           description="Manage suite baselines (suites/baselines/<suite>.json).")
    sub = parser.add_subparsers(dest="action", required=True, metavar="{update,show}")
    update = sub.add_parser("update", help="write the baseline from a complete suite run (default: the latest)")
    _add_source_options(update)
    update.add_argument("--allow-failed", action="store_true", help="accept a suite run with failed cells (they "
                        "are recorded as failing: the check then only warns while they still fail)")
    show = sub.add_parser("show", help="print the suite's baseline")
    show.add_argument("--suite", required=True)
    show.add_argument("--baselines-dir", metavar="DIR")
    ns = _parse(parser, args)
    if isinstance(ns, int):
        return ns
    try:
        return _update(ns) if ns.action == "update" else _show(ns)
    except _run_errors() as exc:
        return fail(f"baseline {ns.action}", str(exc))


def _update(ns: argparse.Namespace) -> int:
    from qbench.regress import baseline as bl
    from qbench.regress.gates import FAIL, evaluate
    from qbench.regress.report import console

    path = bl.baseline_path(ns.suite, ns.baselines_dir)
    settings = bl.check_settings(ns.suite)
    parent = _suite_run(ns)
    baseline = bl.build_baseline(bl.run_snapshot(ns.tracking_uri, parent), uri=ns.tracking_uri,
                                 experiment=ns.experiment, allow_failed=ns.allow_failed)
    bl.write_baseline(path, baseline)
    host = baseline["host"]
    console.print(f"baseline {path}: {len(baseline['cells'])} cells from suite run {parent.info.run_id} "
                  f"(host {host.get('host_id')}: {host.get('cpu')}, torch {host.get('torch')}; "
                  f"qbench {baseline['qbench_version']})", highlight=False, markup=False, soft_wrap=True)
    # the only gates a run can fail against itself are the absolute ones (accuracy floors)
    for gate in evaluate(baseline, baseline, settings):
        if gate.outcome == FAIL:
            console.print(f"warning: the baseline itself fails a gate, so will every check: {gate.message}",
                          highlight=False, markup=False, soft_wrap=True)
    return 0


def _show(ns: argparse.Namespace) -> int:
    import pandas as pd

    from qbench.regress import baseline as bl
    from qbench.regress.report import console

    path = bl.baseline_path(ns.suite, ns.baselines_dir)
    baseline = bl.read_baseline(path)
    rows = [{"cell": name, "status": c["status"], "kernel": c.get("kernel"), "top-1": c["accuracy"].get("top1"),
             "% of FP32": c["accuracy"].get("acc_pct_fp32"), "speed-up": c["latency"].get("speedup"),
             "p50 ms": c["latency"].get("p50_ms"), "samples": len(c["latency"].get("samples_ms") or []),
             "RSS MB": c["memory"].get("peak_rss_inference_mb"), "artifact bytes": c["size"].get("artifact_bytes"),
             "unstable": c.get("unstable")} for name, c in baseline["cells"].items()]
    source, host = baseline.get("source") or {}, baseline.get("host") or {}
    console.print(f"{path}: suite {baseline['suite']}, created {baseline.get('created_at')} from run "
                  f"{source.get('run_id')} (git {source.get('git_sha')}), qbench {baseline.get('qbench_version')}, "
                  f"host {host.get('host_id')} ({host.get('cpu')}, {host.get('isa')}, torch {host.get('torch')})",
                  highlight=False, markup=False, soft_wrap=True)
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".6g"))
    return 0
