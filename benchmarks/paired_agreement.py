"""How far an independent interleaved timing can agree with qbench's paired speed-up: both methods, alternated in
one process on the same two ONNX artifacts, several times.

Issue "speed-ups that survive a noisy host" asks that an independent script's interleaved timing of a cell's two
artifacts falls inside the cell's paired CI. benchmarks/paired_stability.py checks that across processes. This
benchmark separates the two sources of disagreement: each round creates fresh sessions (as a fresh cell does), runs
qbench's paired window on them (qbench.measure.paired.time_paired with the ``measure.paired`` defaults), then the
independent timing of benchmarks/interleaved_ort.py (40 blocks of 50 calls, FP32 then quantized, median of
block-median ratios) on the same sessions, as the issue's own script does it and with 50 uncounted calls at the
start of each block (``--settle-calls 50``: what is left when the switch transient is taken out). It reports,
per round, qbench's estimate and 95 % CI and both independent figures, and overall: how often the CI covered each,
the mean difference between the methods (a bias would show there), and each method's round-to-round SD (its own
noise, which no CI of the other method can absorb).

    python benchmarks/paired_agreement.py [--rounds 8] [--model resnet18] [--quant w8a8_pc]
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _common import latest_record, machine_line, markdown_table, run_qbench, write_section
from interleaved_ort import block_median_ms, feeds, session

from qbench.config import LatencyConfig, PairedConfig
from qbench.measure.paired import time_paired
from qbench.worker.speed import paired_warmup_calls


def timed(sess: object, inputs: dict[str, np.ndarray]) -> Callable[[], float]:
    def call() -> float:
        start = time.perf_counter_ns()
        sess.run(None, inputs)  # type: ignore[attr-defined]
        return (time.perf_counter_ns() - start) / 1e6

    return call


def independent(reference: object, candidate: object, inputs: dict[str, np.ndarray], blocks: int = 40,
                calls: int = 50, settle: int = 0) -> float:
    """benchmarks/interleaved_ort.py's estimate on already warm sessions."""
    ratios = [block_median_ms(reference, inputs, calls, settle)  # type: ignore[arg-type]
              / block_median_ms(candidate, inputs, calls, settle)  # type: ignore[arg-type]
              for _ in range(blocks)]
    return statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--quant", default="w8a8_pc")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--host-note", default="")
    args = parser.parse_args()
    paired = PairedConfig()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        artifacts, record = [], {}
        for quant in ("fp32", args.quant):
            run_qbench(["run", f"model={args.model}", f"quant={quant}", "backend=onnxruntime", "tracking=none"], cwd)
            record = latest_record(cwd)
            artifacts.append(next(a for a in record["artifacts"] if a.endswith(".onnx")))
        rows, estimates = [], []
        others: dict[str, list[float]] = {"naive": [], "settled": []}
        covered: dict[str, list[bool]] = {"naive": [], "settled": []}
        window_covered: dict[str, list[bool]] = {"naive": [], "settled": []}
        for round_ in range(1, args.rounds + 1):
            reference, candidate = session(artifacts[0], args.threads), session(artifacts[1], args.threads)
            inputs = feeds(reference, np.random.default_rng(0))
            result = time_paired(timed(reference, inputs), timed(candidate, inputs), block_ms=paired.block_ms,
                                 min_block_calls=paired.min_block_calls, min_blocks=paired.min_blocks,
                                 max_blocks=paired.max_blocks, max_duration_s=paired.max_duration_s,
                                 threshold=0.02, warmup_calls=paired_warmup_calls(LatencyConfig()))
            estimate, low, high = result.interval()
            _, window_low, window_high = result.window_interval()
            estimates.append(estimate)
            row = [str(round_), f"{estimate:.3f} [{low:.3f}, {high:.3f}]", f"{len(result.reference_ms)}"]
            for kind, settle in (("naive", 0), ("settled", 50)):
                other = independent(reference, candidate, inputs, settle=settle)
                others[kind].append(other)
                covered[kind].append(low <= other <= high)
                window_covered[kind].append(window_low <= other <= window_high)
                row += [f"{other:.3f}", "inside" if covered[kind][-1] else "outside"]
            rows.append(row)
    wall = time.perf_counter() - start
    summary_rows = [["qbench paired", f"{statistics.mean(estimates):.3f}", f"{statistics.stdev(estimates):.3f}",
                     "", "", ""]]
    for kind, label in (("naive", "independent, 50-call blocks (the issue's method)"),
                        ("settled", "independent, 50 uncounted + 50 counted calls a block")):
        differences = [o - e for o, e in zip(others[kind], estimates, strict=True)]
        mean_diff, sd_diff = statistics.mean(differences), statistics.stdev(differences)
        t_stat = mean_diff / (sd_diff / math.sqrt(len(differences))) if sd_diff else float("inf")
        summary_rows.append([label, f"{statistics.mean(others[kind]):.3f}", f"{statistics.stdev(others[kind]):.3f}",
                             f"{mean_diff:+.4f} (SD {sd_diff:.4f}, t = {t_stat:.2f})",
                             f"{sum(covered[kind])} of {len(covered[kind])}",
                             f"{sum(window_covered[kind])} of {len(window_covered[kind])}"])
    table = markdown_table(["round", "qbench paired [95 % CI]", "blocks", "independent", "vs the CI",
                            "independent, settled", "vs the CI"], rows)
    summary = markdown_table(["", "mean", "round-to-round SD", "minus qbench", "inside qbench's CI",
                              "inside the window CI"], summary_rows)
    write_section(
        "paired_agreement",
        f"Paired speed-up vs an independent interleaved timing, {args.rounds} rounds in one process",
        f"Machine: {machine_line(record)}. {args.model} {args.quant} vs FP32 on onnxruntime, {args.threads} threads, "
        f"random batch-1 inputs; each round: fresh sessions of the two artifacts of one `qbench run` each, qbench's "
        f"paired window (`measure.paired` defaults, threshold 0.02), then benchmarks/interleaved_ort.py's timing on "
        f"the same sessions, without and with 50 uncounted calls a block. {wall:.0f} s in all. {args.host_note}"
        f"\n\n{table}\n\n{summary}")


if __name__ == "__main__":
    main()
