"""(b) Stability: the spread of the p50 latency across repeated runs of the same cell.

Runs one cell N times (fresh worker process each time, default protocol) and reports every p50, their
mean and the coefficient of variation (std / mean). Target on this machine: CV <= 3 %.

    python benchmarks/stability.py [--repeats 5] [--model resnet18] [--quant w8a8_pc] [--backend onnxruntime]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from _common import latest_record, machine_line, markdown_table, run_qbench, write_section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cells", nargs="+", default=["resnet18:w8a8_pc:onnxruntime", "resnet18:fp32:torch"],
                        help="MODEL:QUANT:BACKEND")
    args = parser.parse_args()
    rows, machine = [], ""
    for spec in args.cells:
        model, quant, backend = spec.split(":")
        p50s, cis = [], []
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.repeats):
                cell = [f"model={model}", f"quant={quant}", f"backend={backend}"]
                run_qbench(["run", *cell, "tracking=none"], Path(tmp))
                record = latest_record(Path(tmp))
                machine = machine_line(record)
                p50s.append(record["metrics"]["latency.p50_ms"])
                cis.append((record["metrics"]["latency.ci95_high_ms"] - record["metrics"]["latency.ci95_low_ms"])
                           / 2 / record["metrics"]["latency.p50_ms"])
        mean = statistics.mean(p50s)
        cv = statistics.stdev(p50s) / mean
        rows.append([f"{model}/{quant}/{backend}", " ".join(f"{p:.4f}" for p in p50s), f"{mean:.4f}",
                     f"{cv * 100:.2f} %", f"±{statistics.mean(cis) * 100:.2f} %"])
    table = markdown_table(["cell", "p50 of each run (ms)", "mean", "CV of p50", "mean within-run 95% CI"], rows)
    write_section("stability", f"(b) Stability: p50 across {args.repeats} runs of the same cell",
                  f"Machine: {machine}. Each run is a fresh `qbench run` (new worker process, default protocol)."
                  f"\n\n{table}\n\nTarget: CV of p50 <= 3 %.")


if __name__ == "__main__":
    main()
