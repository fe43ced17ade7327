"""(c) Harness overhead: a warm-cache suite's wall time vs the time spent inside measurement windows.

Runs a suite twice (the first run trains/exports what is missing; the second, with ``resume=false``, is
the warm one that is measured) and splits its wall time: measurement windows (latency, throughput,
energy), accuracy evaluation, loading and quantizing, worker start-up (a fork of the fork server, or with
``suite.fork_server=false`` a fresh interpreter + imports), MLflow
logging, and the sweeper itself (planning, composing configs, summary).

    python benchmarks/overhead.py [--suite smoke] [ARGS passed to qbench run ...]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import machine_line, markdown_table, records, run_qbench, write_section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="smoke")
    args, extra = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        run_qbench(["run", f"+suite={args.suite}", *extra], cwd)  # warm-up: caches, MLflow store
        for path in cwd.glob("results/suites"):
            import shutil

            shutil.rmtree(path)
        _, wall = run_qbench(["run", f"+suite={args.suite}", "resume=false", *extra], cwd)
        cells = [r for r in records(cwd) if r["status"] == "finished"]
    m = [r["metrics"] for r in cells]

    def total(key: str) -> float:
        return sum(x.get(key, 0.0) for x in m)

    single_windows = total("time.measure_windows_s")
    # the paired window times the cell's model too (interleaved with its FP32 reference): a measurement window;
    # deploying that reference is the cost of pairing. A LoadGen scenario is a measurement window as a whole.
    paired_window = total("time.paired_window_s")
    paired_deploy = total("time.paired_s") - paired_window
    scenarios = total("time.scenario_s")
    windows = single_windows + paired_window + scenarios
    accuracy = total("time.accuracy_s")
    load = total("time.load_s") + total("time.quantize_deploy_s")
    in_worker = total("time.cell_s")
    worker_wall = total("time.worker_wall_s")
    tracking = sum(r.get("orchestrator", {}).get("tracking_s", 0.0) for r in cells)
    startup = worker_wall - in_worker
    other_cell = in_worker - windows - paired_deploy - accuracy - load
    sweeper = wall - worker_wall - tracking
    rows = [
        ["measurement windows (latency, throughput, energy)", f"{single_windows:.1f}",
         f"{single_windows / wall * 100:.1f} %"],
        [f"paired window ({sum(1 for x in m if 'time.paired_s' in x)} cells: quantized and FP32 interleaved)",
         f"{paired_window:.1f}", f"{paired_window / wall * 100:.1f} %"],
        ["LoadGen scenarios", f"{scenarios:.1f}", f"{scenarios / wall * 100:.1f} %"],
        ["deploying the FP32 reference for the paired window", f"{paired_deploy:.1f}",
         f"{paired_deploy / wall * 100:.1f} %"],
        ["accuracy + fidelity evaluation", f"{accuracy:.1f}", f"{accuracy / wall * 100:.1f} %"],
        ["data + model load, quantize, deploy (export, ORT tools)", f"{load:.1f}", f"{load / wall * 100:.1f} %"],
        ["rest of the cell (fingerprint, sizes, op counts)", f"{other_cell:.1f}", f"{other_cell / wall * 100:.1f} %"],
        ["worker start-up (fork of the fork server, or fresh interpreter + imports)", f"{startup:.1f}",
         f"{startup / wall * 100:.1f} %"],
        ["MLflow logging", f"{tracking:.1f}", f"{tracking / wall * 100:.1f} %"],
        ["sweeper (plan, compose, summary, parent run)", f"{sweeper:.1f}", f"{sweeper / wall * 100:.1f} %"],
        ["**suite wall time**", f"**{wall:.1f}**", "100 %"],
    ]
    table = markdown_table(["where the time goes", "seconds", "share"], rows)
    overhead = 1 - windows / wall
    write_section("overhead", f"(c) Harness overhead: warm `qbench run +suite={args.suite}`",
                  f"Machine: {machine_line(cells[0])}. {len(cells)} cells, warm caches, `resume=false`.\n\n{table}\n\n"
                  f"Harness overhead (everything but the measurement windows): {overhead * 100:.1f} % of wall time "
                  f"({(wall - windows) / len(cells):.1f} s per cell); pairing adds {paired_deploy:.1f} s of deployment "
                  f"to the overhead ({paired_deploy / wall * 100:.1f} % of wall time). Target: <= 10 %.")


if __name__ == "__main__":
    main()
