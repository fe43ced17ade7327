"""Helpers shared by the benchmark scripts: run qbench in a scratch directory, read its records, and write
a result table into benchmarks/RESULTS.md (one section per benchmark, replaced on each run)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"


def run_qbench(args: list[str], cwd: Path, check: bool = True) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``qbench ARGS`` in ``cwd``; returns the process and its wall time in seconds."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "qbench", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "160"})
    wall = time.perf_counter() - start
    if check and proc.returncode != 0:
        tail = f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        raise SystemExit(f"qbench {' '.join(args)} failed ({proc.returncode}):\n{tail}")
    return proc, wall


def records(cwd: Path) -> list[dict]:
    from qbench.record import iter_records

    return [record for _, record in iter_records(cwd / "results")]


def latest_record(cwd: Path) -> dict:
    paths = sorted(cwd.glob("results/runs/*/record.json"))
    return json.loads(paths[-1].read_text())


def machine_line(record: dict) -> str:
    t = record["tags"]
    return (f"{t.get('env.cpu.model')} ({t.get('env.cpu.physical_cores')} cores, ISA {t.get('env.cpu.isa')}), "
            f"torch {t.get('env.version.torch')}, onnxruntime {t.get('env.version.onnxruntime')}, "
            f"qbench {t.get('env.git_sha', '')[:12]}, {time.strftime('%Y-%m-%d')}")


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, title: str, body: str) -> None:
    """Replace (or append) the section ``name`` of RESULTS.md and print it."""
    header = "# Benchmark results\n\nWritten by the scripts in this folder.\n"
    text = RESULTS.read_text() if RESULTS.exists() else header
    block = f"<!-- {name} -->\n## {title}\n\n{body.strip()}\n<!-- /{name} -->"
    pattern = re.compile(rf"<!-- {name} -->.*?<!-- /{name} -->", re.S)
    text = pattern.sub(block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)
    print(block)
