"""(a) Fidelity: qbench's p50 latency vs an independent bare timing of the same artifact, same threads.

For an ONNX Runtime artifact (resnet18 W8A8 per-channel QDQ) and a torch model (resnet18 FP32), run the
cell with qbench, then time the very artifact it deployed in a fresh process with a plain loop
(``perf_counter`` around each call, same thread counts, same graph optimization level) and compare
medians. A ratio near 1.0 means qbench's protocol adds no bias of its own.

This VM's speed drifts between processes (bare loops of the same torch model gave 2.80, 2.83 and 3.86 ms
in three consecutive processes), so qbench and the bare loop are run alternately for ``--rounds`` rounds
and the medians of their per-run p50s are compared ("across processes"). To separate the protocol's own
bias from that host noise, the same artifact is also timed *within one fresh process*, alternating blocks
of qbench's protocol (``measure_latency`` with the default ``measure`` config) and the bare loop
("same process, A/B").

    python benchmarks/fidelity.py [--threads N] [--calls 3000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import latest_record, machine_line, markdown_table, run_qbench, write_section

# the ORT session exactly as qbench's onnxruntime backend configures it (threads, sequential, all optimizations)
ORT_SESSION = r"""
options = ort.SessionOptions()
options.intra_op_num_threads = threads; options.inter_op_num_threads = 1
options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
"""

BARE_ORT = r"""
import sys, time, numpy as np, onnxruntime as ort
path, threads, calls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
exec(ORT_SESSION)
for _ in range(200): session.run(None, {"input": x})
samples = []
for _ in range(calls):
    t = time.perf_counter_ns(); session.run(None, {"input": x}); samples.append(time.perf_counter_ns() - t)
print(float(np.median(samples)) / 1e6)
"""

BARE_TORCH = r"""
import sys, time, numpy as np, torch, torchvision
path, threads, calls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads); torch.set_num_interop_threads(1)
model = torchvision.models.resnet18(num_classes=10)
model.load_state_dict(torch.load(path, weights_only=True)); model.eval()
x = torch.randn(1, 3, 32, 32)
samples = []
with torch.inference_mode():
    for _ in range(200): model(x)
    for _ in range(calls):
        t = time.perf_counter_ns(); model(x); samples.append(time.perf_counter_ns() - t)
print(float(np.median(samples)) / 1e6)
"""


AB = r"""
import sys, time, statistics, numpy as np
kind, path, threads, calls, blocks = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
from qbench.config import LatencyConfig
from qbench.measure.latency import measure_latency, wall_clock_call
if kind == "onnxruntime":
    import onnxruntime as ort
    exec(ORT_SESSION)
    call = lambda: session.run(None, {"input": x})
else:
    import torch, torchvision
    torch.set_num_threads(threads); torch.set_num_interop_threads(1)
    model = torchvision.models.resnet18(num_classes=10); model.load_state_dict(torch.load(path, weights_only=True))
    model.eval(); x = torch.randn(1, 3, 32, 32)
    torch.set_grad_enabled(False)
    call = lambda: model(x)
protocol = LatencyConfig(min_calls=200, min_duration_s=3.0, warmup_calls=10, warmup_s=1.0)  # conf/measure/default
ours, theirs = [], []
for _ in range(blocks):
    ours.append(float(np.median(measure_latency(wall_clock_call(call), protocol).samples_ms)))
    for _ in range(200): call()
    samples = []
    for _ in range(calls):
        t = time.perf_counter_ns(); call(); samples.append(time.perf_counter_ns() - t)
    theirs.append(float(np.median(samples)) / 1e6)
print(statistics.median(ours), statistics.median(theirs))
"""


def same_process(kind: str, artifact: str, threads: int, calls: int, blocks: int = 5) -> tuple[float, float]:
    """(qbench protocol p50, bare loop p50) of ``artifact`` timed alternately in one fresh process."""
    import os

    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, "-c", f"ORT_SESSION = {ORT_SESSION!r}\n" + AB, kind, artifact, str(threads),
                          str(calls), str(blocks)],
                         capture_output=True, text=True, check=True, env=env)
    ours, theirs = (float(v) for v in out.stdout.strip().splitlines()[-1].split())
    return ours, theirs


def bare(script: str, artifact: str, threads: int, calls: int) -> float:
    env_threads = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    import os

    out = subprocess.run([sys.executable, "-c", f"ORT_SESSION = {ORT_SESSION!r}\n" + script, artifact, str(threads),
                          str(calls)], capture_output=True,
                         text=True, check=True, env={**os.environ, **env_threads})
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: qbench's default)")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rows, machine = [], ""
    cases = [("onnxruntime", "w8a8_pc", BARE_ORT, ".onnx"), ("torch", "fp32", BARE_TORCH, ".pt")]
    with tempfile.TemporaryDirectory() as tmp:
        for backend, quant, script, suffix in cases:
            ours, theirs, cis = [], [], []
            artifact, threads = "", 0  # known after the first qbench run
            for round_ in range(args.rounds):
                cwd = Path(tmp) / f"{backend}-{round_}"
                cwd.mkdir()
                extra = [f"measure.threads.intra_op={args.threads}"] if args.threads else []
                if round_ % 2 and theirs:  # alternate which of the two goes first: drift hits both alike
                    theirs.append(bare(script, artifact, threads, args.calls))
                run_qbench(["run", "model=resnet18", f"quant={quant}", f"backend={backend}", "tracking=none", *extra],
                           cwd)
                record = latest_record(cwd)
                machine = machine_line(record)
                artifact = next(a for a in record["artifacts"] if a.endswith(suffix))
                threads = int(record["metrics"]["threads.intra_op"])
                ours.append(record["metrics"]["latency.p50_ms"])
                cis.append(f"{record['metrics']['latency.ci95_low_ms']:.3f}-{record['metrics']['latency.ci95_high_ms']:.3f}")
                if len(theirs) < len(ours):
                    theirs.append(bare(script, artifact, threads, args.calls))
            ratio = statistics.median(ours) / statistics.median(theirs)
            label = f"resnet18 {record['tags']['scheme']} on {backend} ({record['tags']['kernel']})"
            rows.append([label, "across processes", threads, " ".join(f"{v:.3f}" for v in ours), " ".join(cis),
                         " ".join(f"{v:.3f}" for v in theirs), f"{ratio:.3f}"])
            a, b = same_process(backend, artifact, threads, args.calls)
            rows.append([label, "same process, A/B", threads, f"{a:.3f}", "", f"{b:.3f}", f"{a / b:.3f}"])
    table = markdown_table(["artifact", "comparison", "threads", "qbench p50 (ms)", "qbench 95% CI per round",
                            "bare p50 (ms)", "ratio of medians"], rows)
    write_section("fidelity", "(a) Fidelity: qbench p50 vs bare timing of the same artifact",
                  f"Machine: {machine}. Bare timing: fresh process, {args.calls} calls after 200 warm-up calls, "
                  f"random input of the same shape; {args.rounds} alternating rounds.\n\n{table}\n\n"
                  "Target: ratio within 0.95-1.05.")
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
