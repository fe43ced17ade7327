"""OpenVINO next to ONNX Runtime and torch_int8: resnet18 and mobilenet_v2, FP32 and W8A8 per-channel (OpenVINO with
qbench's QDQ model and with NNCF's), in one suite run; then the OpenVINO FP32 and int8 artifacts of that run timed
again interleaved in one process (the cells' own p50s come from windows minutes apart on a shared CPU).

    python benchmarks/openvino_cpu.py [DIR]   # writes the openvino section of RESULTS.md; DIR keeps the suite run
                                              # (a DIR that already holds one is reported again, not re-run)
    python benchmarks/openvino_cpu.py --max-isa AVX2 [DIR]
        # OpenVINO only, its CPU plugin held to oneDNN's AVX2 kernels (ONEDNN_MAX_CPU_ISA=AVX2, which the plugin
        # honours: the runtime graph's primitive names say so) on a VNNI host: the stand-in for an AVX2-only CPU
        # where none is at hand; writes the openvino_avx2 section

(Not named openvino.py: this folder is first on sys.path, and the script would shadow the package.)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line, markdown_table, records, run_qbench, write_section

MODELS = ("resnet18", "mobilenet_v2")
GRID = ["+suite=vision", f"model={','.join(MODELS)}", "quant=fp32,w8a8_pc", "backend=torch_int8,onnxruntime,openvino",
        "backend.int8_source=qdq,nncf", "resume=false"]
# the AVX2 stand-in: OpenVINO cells only (ONNX Runtime's MLAS and fbgemm do not read oneDNN's cap)
AVX2_GRID = ["+suite=vision", f"model={','.join(MODELS)}", "quant=fp32,w8a8_pc", "backend=openvino",
             "backend.int8_source=qdq,nncf", "resume=false"]
ROUNDS, CALLS = 30, 40  # interleaved timing: rounds x (CALLS FP32 calls, CALLS int8 calls)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def _suite_rows(cells: list[dict]) -> list[list[str]]:
    fp32: dict[tuple[str, str], float] = {}  # the suite's reference rule: the first FP32 cell by name
    for r in sorted(cells, key=lambda r: r["cell"]):
        if r.get("status") == "finished" and r["config"]["quant"]["method"] == "none":
            key = (r["config"]["model"]["name"], r["config"]["backend"]["name"])
            fp32.setdefault(key, r["metrics"]["latency.p50_ms"])
    rows = []
    for r in sorted(cells, key=lambda r: r["cell"]):
        if r.get("status") != "finished":
            rows.append([r["cell"], r.get("status", ""), *["—"] * 8])
            continue
        m, t = r["metrics"], r["tags"]
        base = fp32.get((r["config"]["model"]["name"], r["config"]["backend"]["name"]))
        gap = m.get("acc.gap_top1")
        rows.append([r["cell"], t.get("kernel", ""), f"{m['latency.p50_ms']:.3f}",
                     "—" if base is None else f"{base / m['latency.p50_ms']:.2f}x", _pct(m.get("acc.fp32_top1")),
                     _pct(m.get("acc.top1")), _pct(m.get("acc.top1_simulated")),
                     "—" if gap is None else f"{100 * gap:+.2f}",
                     _pct(m.get("opmix.integer_mac_share")), t.get("opmix.ops", "")])
    return rows


def _interleaved(fp32_xml: Path, int8_xml: Path, threads: int, shape: tuple[int, ...]) -> tuple[float, float]:
    """Median per-call ms of the two compiled models, timed in alternating rounds in this process."""
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    x = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
    requests = []
    for path in (fp32_xml, int8_xml):  # static batch 1, as the cells compile it (qbench/backends/openvino/deploy.py)
        model = core.read_model(str(path))
        model.reshape([1, *shape])
        requests.append(core.compile_model(model, "CPU", config).create_infer_request())
    samples: list[list[float]] = [[], []]
    for request in requests:  # warm-up
        for _ in range(50):
            request.infer({0: x}, share_inputs=True, share_outputs=True)
    for _ in range(ROUNDS):
        for request, out in zip(requests, samples, strict=True):
            for _ in range(CALLS):
                t0 = time.perf_counter_ns()
                request.infer({0: x}, share_inputs=True, share_outputs=True)
                out.append((time.perf_counter_ns() - t0) / 1e6)
    return statistics.median(samples[0]), statistics.median(samples[1])


def _span_s(cells: list[dict]) -> float:
    """Seconds from the first cell's start to the last cell's end (skipped cells carry no times)."""
    from datetime import datetime

    stamps = [datetime.strptime(r[k], "%Y-%m-%dT%H:%M:%S%z") for r in cells for k in ("started_at", "ended_at")
              if r.get(k)]
    return (max(stamps) - min(stamps)).total_seconds() if stamps else float("nan")


def _artifact(cells: list[dict], cell: str) -> Path:
    (record,) = [r for r in cells if r["cell"] == cell]
    return next(Path(a) for a in record["artifacts"] if a.endswith(".xml"))


def _paired(m: dict) -> str:
    if m.get("speedup.paired") is None:
        return "—"
    return (f"{m['speedup.paired']:.2f}x [{m['speedup.paired_ci95_low']:.2f}, "
            f"{m['speedup.paired_ci95_high']:.2f}]")


def _avx2_rows(cells: list[dict]) -> list[list[str]]:
    rows = []
    for r in sorted(cells, key=lambda r: r["cell"]):
        m, t = r.get("metrics", {}), r.get("tags", {})
        if r.get("status") != "finished":
            rows.append([r["cell"], r.get("status", ""), *["—"] * 7])
            continue
        rows.append([r["cell"], t.get("kernel", ""), t.get("int8.path", "—"), t.get("openvino.primitives", ""),
                     f"{m['latency.p50_ms']:.3f}", _paired(m), _pct(m.get("acc.top1")),
                     _pct(m.get("acc.top1_simulated")), _pct(m.get("opmix.integer_mac_share"))])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", nargs="?", type=Path, help="keep (or report again) the suite run in DIR")
    parser.add_argument("--max-isa", metavar="ISA", help="oneDNN ISA cap for OpenVINO (ONEDNN_MAX_CPU_ISA), e.g. AVX2")
    ns = parser.parse_args()
    if ns.max_isa:
        os.environ["ONEDNN_MAX_CPU_ISA"] = ns.max_isa.upper()  # before this process or the suite compiles anything
    with tempfile.TemporaryDirectory() as tmp:
        cwd = ns.dir or Path(tmp)
        cwd.mkdir(parents=True, exist_ok=True)
        grid = AVX2_GRID if ns.max_isa else GRID
        if not records(cwd):
            run_qbench(["run", *grid], cwd, check=False)
        cells = records(cwd)
        wall = _span_s(cells)
        compare, _ = run_qbench(["compare", "--where", "model == 'resnet18'", "--sort", "speedup"], cwd, check=False)
        timed = []
        for model in MODELS:
            fp32 = next(r for r in cells if r["cell"] == f"{model}/fp32/openvino")
            threads = int(fp32["tags"]["openvino.inference_num_threads"])
            shape = (3, 32, 32)
            for source, suffix in (("qdq", ""), ("nncf", "/nncf")):
                a, b = _interleaved(_artifact(cells, f"{model}/fp32/openvino"),
                                    _artifact(cells, f"{model}/w8a8-pc/openvino{suffix}"), threads, shape)
                timed.append([model, source, str(threads), f"{a:.3f}", f"{b:.3f}", f"{a / b:.2f}x"])
    machine = machine_line(cells[0]) if cells else "unknown"
    ov_tags = next(r["tags"] for r in cells if r["cell"].endswith("/openvino"))
    load = "/".join(f"{v:.1f}" for v in os.getloadavg())
    interleaved = f"""The same OpenVINO artifacts (the suite cells' `model.xml`) compiled again in one process and
timed in {ROUNDS} alternating rounds of {CALLS} calls each (batch 1, same thread count; median per call):

{markdown_table(["model", "int8 source", "threads", "FP32 ms", "int8 ms", "speed-up"], timed)}

`qbench compare --where "model == 'resnet18'" --sort speedup` on that run:

```
{compare.stdout.strip()}
```
"""
    if ns.max_isa:
        header = ["cell", "kernel", "int8 path", "oneDNN primitives (compute layers)", "p50 ms",
                  "paired speed-up [95 % CI]", "deployed top-1 %", "simulated top-1 %", "MACs in int8 %"]
        body = f"""Machine: {machine}; openvino {ov_tags.get('openvino.version', '?').split('-')[0]}; host ISA override
`{ov_tags.get('env.cpu.isa_override')}`. Written by `python benchmarks/openvino_cpu.py --max-isa {ns.max_isa}`: one
suite run (`ONEDNN_MAX_CPU_ISA={ns.max_isa.upper()} qbench run {' '.join(grid)}`, default latency protocol, batch 1,
{wall:.0f} s from the first cell's start to the last one's end), digits at 32x32 (360 evaluation images: one image =
0.28 pt); `INFERENCE_NUM_THREADS` = the cell's intra-op threads, `PERFORMANCE_HINT=LATENCY`,
`INFERENCE_PRECISION_HINT=f32`; energy: estimate. Load average {load} over 1/5/15 min when the report was written.
The primitive names are read from each compiled model's runtime graph: they show which ISA's kernels ran.

{markdown_table(header, _avx2_rows(cells))}

{interleaved}"""
        write_section("openvino_avx2", f"OpenVINO on oneDNN's {ns.max_isa.upper()} kernels "
                      f"(ONEDNN_MAX_CPU_ISA={ns.max_isa.upper()}): FP32 vs W8A8", body)
        return
    suite_header = ["cell", "kernel", "p50 ms", "speed-up vs FP32 (same backend)", "FP32 top-1 %", "deployed top-1 %",
                    "simulated top-1 %", "deployed − simulated pt", "MACs in int8 %", "op mix"]
    body = f"""Machine: {machine}; openvino {ov_tags.get('openvino.version', '?').split('-')[0]}. Written by
`python benchmarks/openvino_cpu.py`: one suite run (`qbench run {' '.join(grid)}`, default latency
protocol, batch 1, {wall:.0f} s from the first cell's start to the last one's end), digits at 32x32 (360 evaluation
images: one image = 0.28 pt). OpenVINO cells: `INFERENCE_NUM_THREADS` = 2 (the cell's intra-op threads),
`PERFORMANCE_HINT=LATENCY`, `INFERENCE_PRECISION_HINT=f32`. The 2-core CPU was shared with other jobs (load average
{load} over 1/5/15 min when the report was written): read single p50s as rough, the interleaved table as the
speed-up.

{markdown_table(suite_header, _suite_rows(cells))}

{interleaved}"""
    write_section("openvino", "OpenVINO: FP32 vs W8A8 next to ONNX Runtime and torch_int8", body)


if __name__ == "__main__":
    main()
