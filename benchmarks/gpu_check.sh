#!/usr/bin/env bash
# One-shot check of qbench's CUDA paths on a GPU machine (torch backend on cuda: CUDA-event latency,
# CUDA max-allocated memory, NVML energy) without installing qbench: run from the repository root with
# hydra-core/omegaconf/antlr4 importable (PYTHONPATH). Results: $OUT (or ./gpu-check) as JSON + a table.
set -uo pipefail
out="${OUT:-gpu-check}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 QBENCH_CACHE="${QBENCH_CACHE:-/tmp/qbench-cache}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/nvidia-smi.txt"
python3 -c "import torch, onnxruntime as ort; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0)); print('ort providers', ort.get_available_providers())" | tee "$out/versions.txt"
work=$(mktemp -d)
run() { (cd "$work" && timeout 300 python3 -m qbench run "$@" tracking=none measure=quick 2>&1 | tail -20); }
for args in "model=resnet18 quant=fp32" "model=resnet18 quant=w8a8_pc" "model=mobilenet_v2 quant=fp32"; do
  echo "== $args backend=torch backend.device=cuda"
  run $args backend=torch backend.device=cuda
done
echo "== same cell on the CPU for comparison"
run model=resnet18 quant=fp32 backend=torch
echo "== ORT with CUDAExecutionProvider (reported unavailable where the CPU build is installed)"
run model=resnet18 quant=fp32 backend=onnxruntime "backend.providers=[CUDAExecutionProvider,CPUExecutionProvider]"
python3 - "$work" "$out" <<'PY'
import json, sys, pathlib
work, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
rows = []
for p in sorted(work.glob("results/runs/*/record.json")):
    r = json.loads(p.read_text()); m, t = r["metrics"], r["tags"]
    rows.append({k: v for k, v in {
        "cell": r["cell"], "status": r["status"], "kernel": t.get("kernel"), "timer": t.get("latency.timer"),
        "p50_ms": m.get("latency.p50_ms"), "top1": m.get("acc.top1"), "cuda_max_alloc_mb": m.get("memory.cuda_max_allocated_mb"),
        "energy_source": t.get("energy.source"), "nvml_mj": m.get("energy.nvml_mj_per_inference"),
        "estimate_mj": m.get("energy.estimate_mj_per_inference"), "device": t.get("env.cuda"), "error": r.get("error")}.items() if v is not None})
(out / "gpu_records.json").write_text(json.dumps(rows, indent=2))
for row in rows: print(row)
PY
