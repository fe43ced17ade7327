"""``qbench tune --objective latency`` on resnet18 / ONNX Runtime, repeated: does the tuned configuration meet the
budget and beat FP32 in every run, and do the latency stage's slow layers stay the same?

    python benchmarks/tune_latency.py [--runs 3] [--max-drop 0.5]   # writes the tune_latency section of RESULTS.md

Each run is a fresh ``qbench tune model=resnet18 backend=onnxruntime --max-drop X`` (default protocol, 2 threads)
in its own folder; the table lists every measured candidate with its paired speed-up over the FP32 cell of the same
run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _common import machine_line, markdown_table, run_qbench, write_section

ARGS = ["tune", "model=resnet18", "backend=onnxruntime"]
HEADER = ["run", "budget met", "best configuration", "drop pt", "speed-up vs FP32 [95 % CI]", "measured candidates",
          "exhaustive space", "s"]


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _speedup(value: float | None, ci: list[float] | None) -> str:
    text = _fmt(value, ".2f") + "x"
    return text if not ci else f"{text} [{ci[0]:.2f}, {ci[1]:.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-drop", type=float, default=0.5)
    ns = parser.parse_args()
    rows, summaries, stages, machine = [], [], [], "unknown"
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(1, ns.runs + 1):
            cwd = Path(tmp) / f"run{run}"
            cwd.mkdir()
            proc, wall = run_qbench([*ARGS, "--max-drop", f"{ns.max_drop:g}"], cwd, check=False)
            stages += [f"run {run}: {line}" for line in proc.stdout.splitlines() if line.startswith("latency stage")]
            (folder,) = (cwd / "results" / "tune").glob("*/*")
            summary = json.loads((folder / "tune.json").read_text())
            best = summary["best"]
            summaries.append([str(run), "yes" if summary["met"] else "no", best["cell"], _fmt(best["drop"], "+.2f"),
                              _speedup(best["speedup"], best.get("speedup_ci")),
                              str(summary["measured"]), str(summary["exhaustive_space"]), f"{wall:.0f}"])
            for c in summary["candidates"]:
                rows.append([str(run), c["cell"], str(c["move"]), str(c["k"]), c["layers"] or "—",
                             _fmt(c["drop"], "+.2f"), _fmt(c["p50_ms"], ".3f"),
                             _speedup(c["speedup"], c.get("speedup_ci"))])
            records = sorted(folder.rglob("record.json"))
            if records:
                machine = machine_line(json.loads(records[0].read_text()))
    command = f"python benchmarks/tune_latency.py --runs {ns.runs} --max-drop {ns.max_drop:g}"
    tune = f"qbench {' '.join(ARGS)} --max-drop {ns.max_drop:g}"
    body = f"""Machine: {machine}. Written by `{command}` ({time.perf_counter() - start:.0f} s): {ns.runs} fresh runs
of `{tune}` (default protocol, batch 1, 2 threads, digits at 32x32: one image = 0.28 pt;
speed-up = paired with the FP32 cell of the same run, interleaved blocks).

{markdown_table(HEADER, summaries)}

What the latency stage found (per-layer kernel time, int8 candidate minus FP32, ONNX Runtime's profiler):

{chr(10).join('- ' + s for s in stages)}

Every measured cell:

{markdown_table(["run", "cell", "move", "k", "layers moved", "drop pt", "p50 ms", "speed-up [95 % CI]"], rows)}
"""
    write_section("tune_latency", "qbench tune: the fastest configuration within the budget (resnet18, ONNX Runtime)",
                  body)


if __name__ == "__main__":
    main()
