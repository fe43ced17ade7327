"""A check's reports: the terminal table of every gate and the markdown summary (what CI shows)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from qbench.regress.gates import FAIL, OUTCOMES, PASS, WARN, Gate

console = Console(stderr=False, width=None if Console().is_terminal else 160)
_STYLE = {PASS: "green", WARN: "yellow", FAIL: "bold red"}


def gates_frame(gates: Sequence[Gate]) -> pd.DataFrame:
    """One row per gate: cell, gate, result, baseline, run, detail."""
    columns = ["cell", "gate", "result", "baseline", "run", "detail"]
    rows = [[g.cell, g.name, g.outcome, g.old_text, g.new_text, g.detail] for g in gates]
    return pd.DataFrame(rows, columns=columns)


def counts_line(gates: Sequence[Gate]) -> str:
    counts = {o: sum(g.outcome == o for g in gates) for o in OUTCOMES}
    verdict = "REGRESSION" if counts[FAIL] else "OK"
    return f"{verdict}: {len(gates)} gates, {counts[PASS]} pass, {counts[WARN]} warn, {counts[FAIL]} fail"


def header_lines(info: dict[str, Any]) -> list[str]:
    """What was compared: the suite run and the baseline (where from, host, versions)."""
    run, base = info["run"], info["baseline"]
    host_r = run.get("host") or {}
    lines = [f"suite {info['suite']}: run {run['run_id']} ({(run.get('run_status') or 'status unknown').lower()}, "
             f"started {run.get('started_at')}, git {run.get('git_sha')}, qbench {run.get('qbench_version')})"]
    if base is None:
        return [*lines, f"baseline: none at {info['baseline_path']} (create one: qbench baseline update --suite "
                        f"{info['suite']}): only the run's own gates (deployment_gap) are checked",
                f"host: run {host_r.get('host_id')} ({host_r.get('cpu')}, {host_r.get('isa')}, "
                f"torch {host_r.get('torch')})"]
    source, host_b = base.get("source") or {}, base.get("host") or {}
    return [
        *lines,
        f"baseline {info['baseline_path']} (run {source.get('run_id')}, git {source.get('git_sha')}, "
        f"qbench {base.get('qbench_version')}, created {base.get('created_at')})",
        f"host: run {host_r.get('host_id')} ({host_r.get('cpu')}, torch {host_r.get('torch')}); "
        f"baseline {host_b.get('host_id')} ({host_b.get('cpu')}, torch {host_b.get('torch')})",
    ]


def print_report(gates: Sequence[Gate], info: dict[str, Any]) -> None:
    """Every gate in a table, then each failure and warning as one line, then the verdict."""
    for line in header_lines(info):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    table = Table(title=f"qbench check {info['suite']}", header_style="bold")
    for column in ("cell", "gate", "result", "baseline", "run", "detail"):
        table.add_column(column, overflow="fold", justify="right" if column in ("baseline", "run") else "left")
    for gate in gates:
        table.add_row(gate.cell, gate.name, f"[{_STYLE[gate.outcome]}]{gate.outcome}[/]", gate.old_text, gate.new_text,
                      gate.detail)
    console.print(table)
    for gate in gates:
        if gate.outcome != PASS:
            # one unwrapped line per finding: what CI logs are grepped for
            console.print(f"{gate.outcome.upper()} {gate.message}", highlight=False, markup=False, soft_wrap=True)
    console.print(counts_line(gates), style=_STYLE[FAIL if any(g.outcome == FAIL for g in gates) else PASS],
                  highlight=False)


def markdown_summary(gates: Sequence[Gate], info: dict[str, Any]) -> str:
    """Verdict, what was compared, failures and warnings first, then every gate."""
    lines = [f"# qbench check: {info['suite']}", "", f"**{counts_line(gates)}**", ""]
    lines += [f"- {line}" for line in header_lines(info)]
    frame = gates_frame(gates)
    for outcome, title in ((FAIL, "Failures"), (WARN, "Warnings")):
        part = frame[frame["result"] == outcome]
        if not part.empty:
            lines += ["", f"## {title}", "", part.to_markdown(index=False)]
    lines += ["", "## All gates", "", frame.to_markdown(index=False), ""]
    return "\n".join(lines)


def write_markdown(path: Path, gates: Sequence[Gate], info: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown_summary(gates, info))
