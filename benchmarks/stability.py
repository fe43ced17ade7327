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
    p50s: dict[str, list[float]] = {spec: [] for spec in args.cells}
    cis: dict[str, list[float]] = {spec: [] for spec in args.cells}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):  # round robin over the cells: machine drift hits all of them alike
            for spec in args.cells:
                model, quant, backend = spec.split(":")
                run_qbench(["run", f"model={model}", f"quant={quant}", f"backend={backend}", "tracking=none"],
                           Path(tmp))
                record = latest_record(Path(tmp))
                machine = machine_line(record)
                m = record["metrics"]
                p50s[spec].append(m["latency.p50_ms"])
                cis[spec].append((m["latency.ci95_high_ms"] - m["latency.ci95_low_ms"]) / 2 / m["latency.p50_ms"])
    for spec in args.cells:
        model, quant, backend = spec.split(":")
        mean = statistics.mean(p50s[spec])
        cv = statistics.stdev(p50s[spec]) / mean
        rows.append([f"{model}/{quant}/{backend}", " ".join(f"{p:.4f}" for p in p50s[spec]), f"{mean:.4f}",
                     f"{cv * 100:.2f} %", f"±{statistics.mean(cis[spec]) * 100:.2f} %"])
    table = markdown_table(["cell", "p50 of each run (ms)", "mean", "CV of p50", "mean within-run 95% CI"], rows)
    write_section("stability", f"(b) Stability: p50 across {args.repeats} runs of the same cell",
                  f"Machine: {machine}. Each run is a fresh `qbench run` (new worker process, default protocol); "
                  "the cells are run round robin."
                  f"\n\n{table}\n\nTarget: CV of p50 <= 3 %.")


if __name__ == "__main__":
    main()
