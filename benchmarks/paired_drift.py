"""How a paired speed-up window behaves over minutes: one long ABBA series of the same two ONNX sessions per
repeat, every call's time kept, then qbench.measure.paired's choices replayed on windows cut from it.

It measures what the paired design rests on (qbench/measure/paired.py):
- the switch transient: the first calls of a model after the other one ran, per position after the switch;
- whole blocks vs their second half: how far the pairs where a model ran first and second differ;
- drift across windows: the SD of window estimates (16 and 40 blocks) against the CI widths, and how often each CI
  (the window's moving-block bootstrap; the reported batch-means CI) covers the same estimate from a window ~2 s
  later. A correct 95 % CI covers such a repeat ~83 % of the time, both estimates carrying the same noise.

    python benchmarks/paired_drift.py [--repeats 2] [--blocks 800] [--model resnet18] [--quant w8a8_pc]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import latest_record, machine_line, markdown_table, run_qbench, write_section
from interleaved_ort import feeds, session

from qbench.config import PairedConfig
from qbench.measure.paired import batch_medians_ci, block_bootstrap_median_ci

GAP_UNITS = 10  # the repeat window starts this many ABBA units (~2 s at 100 ms blocks) after the first ends


def series(fp32: str, quantized: str, blocks: int, threads: int, block_ms: float) -> tuple[list, list]:
    """Per-call milliseconds of ``blocks`` ABBA blocks a side, sized as qbench sizes them."""
    reference, candidate = session(fp32, threads), session(quantized, threads)
    inputs = feeds(reference, np.random.default_rng(0))

    def run(sess: object, calls: int) -> list[float]:
        out = []
        for _ in range(calls):
            start = time.perf_counter_ns()
            sess.run(None, inputs)  # type: ignore[attr-defined]
            out.append((time.perf_counter_ns() - start) / 1e6)
        return out

    calls = [max(5, math.ceil(block_ms / np.median(run(s, 10)[5:]))) for s in (reference, candidate)]
    ref_blocks, cand_blocks = [], []
    for i in range(blocks):
        order = [(reference, calls[0], ref_blocks), (candidate, calls[1], cand_blocks)]
        for sess, n, store in order if i % 2 == 0 else order[::-1]:
            store.append(run(sess, n))
    return ref_blocks, cand_blocks


def analyse(ref_blocks: list, cand_blocks: list) -> dict[str, float]:
    def per_block(blocks: list, half: bool) -> np.ndarray:
        return np.array([np.median(b[len(b) // 2:] if half else b) for b in blocks])

    out: dict[str, float] = {}
    for label, half in (("whole", False), ("half", True)):  # the loop ends on second halves: what qbench counts
        logs = np.log(per_block(ref_blocks, half) / per_block(cand_blocks, half))
        out[f"{label}.first_ratio"] = math.exp(np.median(logs[0::2]))  # pairs where FP32 ran first
        out[f"{label}.second_ratio"] = math.exp(np.median(logs[1::2]))
    units = (logs[0::2] + logs[1::2]) / 2
    out["speedup"] = math.exp(np.median(units))
    for width in (8, 20):
        estimates, covered = [], {"window": [], "batch": []}
        halfwidths: dict[str, list[float]] = {"window": [], "batch": []}
        for start in range(0, len(units) - 2 * width - GAP_UNITS, 4):
            window = units[start:start + width]
            repeat = np.median(units[start + width + GAP_UNITS:start + 2 * width + GAP_UNITS])
            estimates.append(np.median(window))
            for kind, (low, high) in (("window", block_bootstrap_median_ci(window)),
                                      ("batch", batch_medians_ci(window))):
                covered[kind].append(low <= repeat <= high)
                halfwidths[kind].append((high - low) / 2)
        out[f"w{width}.sd"] = float(np.std(estimates, ddof=1))
        for kind in covered:
            out[f"w{width}.{kind}.cover"] = float(np.mean(covered[kind]))
            out[f"w{width}.{kind}.halfwidth"] = float(np.median(halfwidths[kind]))
    fifty_unit = [math.exp(np.median(units[i:i + 50])) for i in range(0, len(units), 50)]
    out["drift_low"], out["drift_high"] = min(fifty_unit), max(fifty_unit)
    return out


def transient(ref_blocks: list, cand_blocks: list) -> list[list[str]]:
    rows = []
    for name, blocks in (("FP32", ref_blocks), ("quantized", cand_blocks)):
        cold = np.array([b[:60] for b in (blocks[1::2] if name == "FP32" else blocks[0::2]) if len(b) >= 60])
        if not len(cold):
            continue
        at = np.median(cold, axis=0)
        settled = float(np.median(at[30:]))
        rows.append([name, f"{settled:.3f}"] + [f"{at[i] / settled:.2f}x" for i in (0, 1, 2, 5)]
                    + [f"{np.median(at[10:20]) / settled:.3f}x"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--blocks", type=int, default=800)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--quant", default="w8a8_pc")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--host-note", default="")
    args = parser.parse_args()
    start = time.perf_counter()
    rows, transient_rows, record = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = []
        for quant in ("fp32", args.quant):
            run_qbench(["run", f"model={args.model}", f"quant={quant}", "backend=onnxruntime", "tracking=none"],
                       Path(tmp))
            record = latest_record(Path(tmp))
            artifacts.append(next(a for a in record["artifacts"] if a.endswith(".onnx")))
        for repeat in range(1, args.repeats + 1):
            ref_blocks, cand_blocks = series(*artifacts, args.blocks, args.threads, PairedConfig().block_ms)
            a = analyse(ref_blocks, cand_blocks)
            transient_rows += [[str(repeat), *row] for row in transient(ref_blocks, cand_blocks)]
            rows.append([str(repeat), f"{a['speedup']:.3f}", f"{a['drift_low']:.3f}-{a['drift_high']:.3f}",
                         f"{a['whole.first_ratio']:.3f} / {a['whole.second_ratio']:.3f}",
                         f"{a['half.first_ratio']:.3f} / {a['half.second_ratio']:.3f}"]
                        + [f"{a[f'w{w}.sd']:.3f}; {a[f'w{w}.window.halfwidth']:.3f} ({a[f'w{w}.window.cover']:.0%}); "
                           f"{a[f'w{w}.batch.halfwidth']:.3f} ({a[f'w{w}.batch.cover']:.0%})" for w in (8, 20)])
    wall = time.perf_counter() - start
    table = markdown_table(
        ["repeat", "speed-up (all units)", "range of 50-unit medians", "per-pair ratio, FP32 first / second: "
         "whole blocks", "second halves", "8-unit windows: SD; window CI half-width (covers a repeat); batch CI",
         "20-unit windows: same"], rows)
    switch = markdown_table(["repeat", "model", "settled ms", "call 1", "call 2", "call 3", "call 6", "calls 11-20"],
                            transient_rows)
    write_section(
        "paired_drift", f"Paired windows over minutes: switch transient, block halves, drift ({args.repeats} series)",
        f"Machine: {machine_line(record)}. {args.model} {args.quant} vs FP32 on onnxruntime, {args.threads} threads, "
        f"random batch-1 inputs; per repeat fresh sessions and one series of {args.blocks} ABBA blocks a side "
        f"(~{PairedConfig().block_ms:.0f} ms each), every call timed; windows cut from it every 4 units, the repeat "
        f"window {GAP_UNITS} units after. {wall:.0f} s in all. {args.host_note}\n\n{table}\n\n"
        f"After a switch (median over the blocks where the model ran second, relative to its settled time):\n\n"
        f"{switch}")


if __name__ == "__main__":
    main()
