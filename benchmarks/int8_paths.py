"""Int8 paths on this CPU: the int8 cells of the vision suite with the path ``auto`` picks, and the same cells
on fbgemm's AVX2 kernels (``FBGEMM_ENABLE_INSTRUCTIONS=AVX2``, ``backend.quantized_engine=fbgemm``: a VNNI
machine running a non-VNNI CPU's kernels) with the full-range path forced, with and without the AVX2
emulation in the simulation (``quant.target_isa=avx2``). Accuracy only: short latency protocol.

    python benchmarks/int8_paths.py            # writes the int8_paths section of RESULTS.md
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line, markdown_table, records, run_qbench, write_section

FAST = ["measure=quick", "measure.energy.duration_s=0", "measure.latency.throughput_batch_size=0",
        "measure.latency.min_calls=5", "measure.latency.min_duration_s=0.05", "tracking=none", "resume=false"]


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def _rows(cells: list[dict], kernels: str) -> list[list[str]]:
    rows = []
    for r in sorted(cells, key=lambda r: r["cell"]):
        m, t = r.get("metrics", {}), r.get("tags", {})
        if r.get("status") != "finished" or "int8.path" not in t:
            continue
        gap = m.get("acc.gap_top1")
        rows.append([r["cell"], kernels, t.get("int8.kernel_isa", ""), t["int8.path"],
                     t.get("quant.emulated_isa", "exact"), t.get("kernel", ""), _pct(m.get("acc.top1")),
                     _pct(m.get("acc.top1_simulated")), "—" if gap is None else f"{100 * gap:+.2f}",
                     _pct(m.get("acc.agreement_simulated"))])
    return rows


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        native, avx2 = Path(tmp) / "native", Path(tmp) / "avx2"
        native.mkdir()
        avx2.mkdir()
        run_qbench(["run", "+suite=vision", "backend=torch_int8,onnxruntime",
                    "quant=w8a8,w8a8_pc,dynamic8,qat_w8a8_pc", *FAST], native, check=False)
        os.environ["FBGEMM_ENABLE_INSTRUCTIONS"] = "AVX2"
        try:
            run_qbench(["run", "+suite=vision", "backend=torch_int8", "backend.quantized_engine=fbgemm",
                        "quant=w8a8,w8a8_pc,qat_w8a8_pc", "backend.int8_path=auto,u8s8",
                        "quant.target_isa=none,avx2", *FAST], avx2, check=False)
        finally:
            del os.environ["FBGEMM_ENABLE_INSTRUCTIONS"]
        native_cells, avx2_cells = records(native), records(avx2)
    header = ["cell", "kernels", "kernel ISA", "int8 path", "simulated ISA", "kernel", "deployed top-1 %",
              "simulated top-1 %", "deployed − simulated pt", "agreement with simulation %"]
    rows = _rows(native_cells, "this CPU") + _rows(avx2_cells, "fbgemm AVX2")
    machine = machine_line(native_cells[0]) if native_cells else "unknown"
    body = f"""Machine: {machine}. Written by `python benchmarks/int8_paths.py`: the int8 cells of the vision suite
(digits, 360 evaluation images: one image = 0.28 pt) with `backend.int8_path=auto` on this CPU's own kernels, then
the torch_int8 cells on fbgemm's AVX2 kernels (`FBGEMM_ENABLE_INSTRUCTIONS=AVX2`, `backend.quantized_engine=fbgemm`)
with `auto` and with the full-range path forced (`/u8s8`), each simulated exactly and with `quant.target_isa=avx2`
(`@avx2`: int16 pair saturation reproduced in the simulation).

{markdown_table(header, rows)}

What it shows: with `auto` every int8 cell on this CPU (AMX/VNNI: `u8s8`) and on fbgemm's AVX2 kernels
(`u8s8_reduce_range`) deploys within 0.56 pt of its simulation (two images). Forcing the full range on the AVX2
kernels loses up to 9.2 pt (digits_cnn W8A8-pc 89.44 % vs 98.61 % simulated), the loss the deployment-gap gate
flags. The AVX2 emulation (`@avx2`) predicts it for resnet18 and digits_cnn (within 2 images); for mobilenet_v2 on
torch_int8 it under-predicts, because 34 of its 53 layer inputs keep PyTorch's own shared activation ranges (FX
quantizes a ReLU6 output with its input's scale and zero point, so those codes sit around a zero point of ~150 and
saturate far more than qbench's [0, 6] range: tag `torch.injected=...,shared_kept=34`).

Not tested here: ONNX Runtime's AVX2 kernels (MLAS has no ISA override: the ORT rows run this CPU's VNNI/AMX kernels;
on an AVX2-only host `auto` deploys 7-bit weights to ORT too), ARM (no machine), and a real AVX2-only or
AVX-512-without-VNNI CPU (fbgemm's AVX2 kernels on this VNNI CPU stand in for it; oneDNN, which PyTorch's x86 engine
prefers for convolutions on VNNI CPUs, is not exercised by the fbgemm rows).
"""
    write_section("int8_paths", "Int8 paths: deployed vs simulated on this CPU and on fbgemm's AVX2 kernels", body)


if __name__ == "__main__":
    main()
