"""An independent interleaved timing of two ONNX models with plain onnxruntime (no qbench code).

The cross-check of qbench's paired speed-up (issue: "speed-ups that survive a noisy host"): it loads the two
artifacts a cell wrote (FP32 and quantized), with the session options qbench records for the cell (intra-op
threads, one inter-op thread, sequential, all graph optimizations), and times them in alternating blocks
(FP32 block, then quantized block, repeated — not qbench's ABBA order, and blocks of a fixed call count, not of
a fixed duration). Its estimate is the median over blocks of FP32 block median / quantized block median. Block
medians, not means: the first calls after each switch between the two models are slow (caches refilled with the
other model's weights), and a block mean carries that switching cost, which a deployed model serving alone does
not pay (measured: 50-call block means put resnet18 FP32 at 1.20 ms and int8 at 1.00 ms, their medians at 0.68
and 0.69 ms, the same as each timed alone). A median still carries part of it when the transient lasts a good
part of the block (FP32's calls 10-20 after a switch ran +8 % on a 2-core Xeon): ``--settle-calls N`` runs N
uncounted calls first in each block. Prints one JSON line.

    python benchmarks/interleaved_ort.py FP32.onnx QUANT.onnx [--threads 2] [--blocks 40] [--calls 50]
        [--settle-calls 0]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import onnxruntime as ort


def session(path: str, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def feeds(sess: ort.InferenceSession, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Batch-1 random inputs of each input's declared shape (symbolic dimensions become 1)."""
    out = {}
    for spec in sess.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in spec.shape]
        out[spec.name] = rng.standard_normal(shape).astype(np.float32)
    return out


def block_median_ms(sess: ort.InferenceSession, inputs: dict[str, np.ndarray], calls: int, settle: int = 0) -> float:
    """Median milliseconds of ``calls`` calls, after ``settle`` uncounted ones (the switch from the other model)."""
    for _ in range(settle):
        sess.run(None, inputs)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        sess.run(None, inputs)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fp32")
    parser.add_argument("quantized")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--blocks", type=int, default=40)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--settle-calls", type=int, default=0,
                        help="uncounted calls at the start of each block (0: the issue's own method)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    reference, candidate = session(args.fp32, args.threads), session(args.quantized, args.threads)
    inputs = feeds(reference, rng)
    for _ in range(args.calls):  # warm-up: first calls allocate and pack weights
        reference.run(None, inputs)
        candidate.run(None, inputs)
    ratios, fp32_ms, quant_ms = [], [], []
    for _ in range(args.blocks):
        fp32_ms.append(block_median_ms(reference, inputs, args.calls, args.settle_calls))
        quant_ms.append(block_median_ms(candidate, inputs, args.calls, args.settle_calls))
        ratios.append(fp32_ms[-1] / quant_ms[-1])
    print(json.dumps({"speedup": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
                      "fp32_ms": statistics.median(fp32_ms), "quantized_ms": statistics.median(quant_ms),
                      "blocks": args.blocks, "calls": args.calls, "settle_calls": args.settle_calls,
                      "threads": args.threads}))


if __name__ == "__main__":
    main()
