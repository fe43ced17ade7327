"""Stability of the speed-up itself: paired (interleaved in the cell) vs unpaired (two cells' p50s).

Runs the FP32 cell and the quantized cell of one model/backend N times, round robin, each a fresh `qbench run`
(default protocol, ``measure.paired`` defaults). Per run: the unpaired speed-up (FP32 cell p50 / quantized cell
p50, two processes) and the quantized cell's paired speed-up with its 95 % CI. Reports the CV of each across
runs (target: paired CV <= 5 %), then cross-checks the last run's paired figure against an independent
interleaved timing of the same two .onnx artifacts (benchmarks/interleaved_ort.py, plain onnxruntime).

    python benchmarks/paired_stability.py [--repeats 5] [--model resnet18] [--quant w8a8_pc]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import HERE, latest_record, machine_line, markdown_table, run_qbench, write_section


def load_average() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--quant", default="w8a8_pc")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--host-note", default="", help="what else ran on the host, written beside the table")
    parser.add_argument("--independent-imports-torch", action="store_true",
                        help="run the independent script in a process that has imported torch, as a qbench worker has")
    args = parser.parse_args()
    rows, unpaired, paired, loads = [], [], [], []
    independent: dict[int, list[float]] = {0: [], 50: []}  # by uncounted calls a block (0: the method)
    inside: dict[int, list[bool]] = {0: [], 50: []}
    start = time.perf_counter()
    machine = ""
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        for run in range(1, args.repeats + 1):
            loads.append(load_average())
            cells = {}
            for quant in ("fp32", args.quant):
                run_qbench(["run", f"model={args.model}", f"quant={quant}", f"backend={args.backend}",
                            "tracking=none"], cwd)
                cells[quant] = latest_record(cwd)
            machine = machine_line(cells[args.quant])
            fp32_p50 = cells["fp32"]["metrics"]["latency.p50_ms"]
            m = cells[args.quant]["metrics"]
            low, high = m["speedup.paired_ci95_low"], m["speedup.paired_ci95_high"]
            unpaired.append(fp32_p50 / m["latency.p50_ms"])
            paired.append(m["speedup.paired"])
            checks = ["-", "-"]
            if args.backend == "onnxruntime":  # the same two artifacts, timed by a script that shares no code
                fp32_onnx = next(Path(cells["fp32"]["cell_dir"]).glob("model_fp32.onnx"))
                quant_onnx = next(a for a in cells[args.quant]["artifacts"] if a.endswith(".onnx"))
                for i, settle in enumerate(independent):
                    script = [str(HERE / "interleaved_ort.py"), str(fp32_onnx), quant_onnx, "--threads",
                              str(int(m.get("threads.intra_op", 2))), "--settle-calls", str(settle)]
                    prefix = ["-c", "import runpy, sys, torch; sys.argv = sys.argv[1:]; "
                                    "runpy.run_path(sys.argv[0], run_name='__main__')"] \
                        if args.independent_imports_torch else []
                    out = subprocess.run([sys.executable, *prefix, *script], capture_output=True, text=True,
                                         check=True)
                    independent[settle].append(json.loads(out.stdout.strip().splitlines()[-1])["speedup"])
                    inside[settle].append(low <= independent[settle][-1] <= high)
                    checks[i] = f"{independent[settle][-1]:.3f} ({'inside' if inside[settle][-1] else 'outside'})"
            rows.append([str(run), f"{fp32_p50:.4f}", f"{m['latency.p50_ms']:.4f}", f"{unpaired[-1]:.3f}",
                         f"{m['speedup.paired']:.3f} [{low:.3f}, {high:.3f}]", f"{m['speedup.paired_blocks']:.0f}",
                         cells[args.quant]["tags"].get("speedup.paired_stop", ""), *checks, loads[-1]])
    wall = time.perf_counter() - start

    def cv(values: list[float]) -> float:
        return statistics.stdev(values) / statistics.mean(values) * 100

    table = markdown_table(["run", "FP32 cell p50 (ms)", "quantized cell p50 (ms)", "unpaired speed-up",
                            "paired speed-up [95 % CI]", "blocks", "stopped by", "independent (vs the CI)",
                            "independent, settled (vs the CI)", "load avg 1/5/15 min"], rows)
    summary = markdown_table(["speed-up", "mean", "CV"], [
        ["unpaired (two cells' p50s)", f"{statistics.mean(unpaired):.3f}", f"{cv(unpaired):.2f} %"],
        ["paired (interleaved in the cell)", f"{statistics.mean(paired):.3f}", f"{cv(paired):.2f} %"],
        *([[f"independent interleaved timing (plain onnxruntime, {settle} uncounted calls a block)",
             f"{statistics.mean(values):.3f}", f"{cv(values):.2f} %"] for settle, values in independent.items()]
          if len(independent[0]) > 1 else [])])
    cross_check = ""
    process = ("imported torch first, as a qbench worker does" if args.independent_imports_torch
               else "imported only onnxruntime and numpy")
    if independent[0]:
        cross_check = (
            f"\n\nIndependent check: after each run, benchmarks/interleaved_ort.py (plain onnxruntime, no qbench code) "
            f"timed that run's two .onnx artifacts, 40 blocks of 50 calls, FP32 then quantized, median of "
            f"block-median ratios: inside qbench's paired CI in **{sum(inside[0])} of {len(inside[0])}** runs; with "
            f"50 uncounted calls first in each block (`--settle-calls 50`): **{sum(inside[50])} of "
            f"{len(inside[50])}**. The script's process {process}.")
    verdict = "met" if cv(paired) <= 5 else "NOT met"
    write_section(
        "paired_stability", f"Speed-up stability: paired vs unpaired, {args.repeats} fresh runs",
        f"Machine: {machine}. {args.model} {args.quant} vs FP32 on {args.backend}; each run a fresh `qbench run` "
        f"of the two cells (default protocol, `measure.paired` defaults), {wall:.0f} s in all. Load average at the "
        f"start of each run in the table (2 vCPUs). {args.host_note}\n\n{table}\n\n{summary}\n\n"
        f"Target: CV of the paired speed-up <= 5 %: **{verdict}** ({cv(paired):.2f} %).{cross_check}")


if __name__ == "__main__":
    main()
