"""Batch-1 Linear latency at SmolLM2-135M's MLP shapes (576 -> 1536, 1536 -> 576): float32 ``F.linear`` vs
torch_int8's int4 weight-only kernel (``aten._weight_int4pack_mm_for_cpu``; float32 and bfloat16 activations) vs
dynamic int8 (torch.ao ``quantize_dynamic``: fbgemm's dynamic quantized Linear). Variants run interleaved (one block
of calls each per round), the table shows the median per-call time over the rounds. Not a test.

    python benchmarks/int4_linear.py [--threads 1] [--rounds 60] [--calls 50]   # writes int4_linear in RESULTS.md
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import markdown_table, write_section

from qbench.backends.torch_int8.int4 import Int4WeightOnlyLinear
from qbench.config.schema import TensorQuantConfig
from qbench.quant.simulate import QuantizedLayer

SHAPES = ((576, 1536), (1536, 576))  # (in, out): SmolLM2-135M's MLP up/gate and down projections
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_line() -> str:
    """CPU model and the ISA flags that matter here, from ``lscpu``."""
    text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = set(fields.get("Flags", "").split())
    return f"{fields.get('Model name', '?').strip()}; ISA flags: {' '.join(f for f in ISA_FLAGS if f in flags)}"


def variants(k: int, n: int) -> dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], int]]:
    """Name -> (callable, weight bytes it reads) for one shape."""
    from torch.ao.quantization import quantize_dynamic

    torch.manual_seed(0)
    linear = nn.Linear(k, n, bias=False).eval()
    out: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], int]] = {
        "fp32 F.linear": (lambda x: F.linear(x, linear.weight), linear.weight.numel() * 4)}
    for group_size in (32, 128):
        spec = TensorQuantConfig(bits=4, granularity="per_group", group_size=group_size, symmetric=True,
                                 observer="minmax")
        layer = QuantizedLayer(linear, "fc", spec, None)
        layer.quantize_weight()
        for dtype in (torch.float32, torch.bfloat16):
            module = Int4WeightOnlyLinear.from_quantized(layer, compute_dtype=dtype)
            name = f"int4 g{group_size} ({str(dtype).removeprefix('torch.')} act.)"
            out[name] = (module, module.packed_nbytes())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dynamic = quantize_dynamic(nn.Sequential(linear), {nn.Linear}, dtype=torch.qint8)
    out["int8 dynamic (fbgemm)"] = (dynamic, k * n + 4 * n)
    return out


@torch.inference_mode()
def measure(rounds: int, calls: int) -> list[list[str]]:
    rows = []
    for k, n in SHAPES:
        x = torch.randn(1, k)
        runs = variants(k, n)
        times: dict[str, list[float]] = {name: [] for name in runs}
        for fn, _ in runs.values():  # warm-up
            for _ in range(calls):
                fn(x)
        for _ in range(rounds):
            for name, (fn, _) in runs.items():
                start = time.perf_counter()
                for _ in range(calls):
                    fn(x)
                times[name].append((time.perf_counter() - start) / calls)
        base = statistics.median(times["fp32 F.linear"])
        for name, (_, nbytes) in runs.items():
            median = statistics.median(times[name])
            rows.append([f"{k}x{n}", name, f"{median * 1e6:.1f}", f"{base / median:.2f}x", f"{nbytes / 1024:.0f}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.backends.quantized.engine = "x86"
    rows = measure(args.rounds, args.calls)
    table = markdown_table(["in x out", "kernel", "median µs/call", "vs fp32", "weight KiB"], rows)
    body = (f"{cpu_line()}\n\ntorch {torch.__version__}, {args.threads} thread(s), batch 1, median of "
            f"{args.rounds} interleaved rounds of {args.calls} calls, {time.strftime('%Y-%m-%d')}.\n\n{table}")
    write_section("int4_linear", "int4 weight-only Linear kernel (batch 1, SmolLM2 MLP shapes)", body)


if __name__ == "__main__":
    main()
