"""backend=openvino: FP32 and static W8A8 cells (qbench's QDQ model and NNCF's) run in OpenVINO's CPU kernels within
a point of FP32 and of the simulation, the op mix read from the runtime graph's layer precisions, weight-only through
NNCF, the skip reasons and bad settings. Skipped where the ``[openvino]`` extra is not installed, except the checks
that the capability answer says so."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from qbench import config as qconfig
from qbench.backends import get_backend

INSTALLED = all(importlib.util.find_spec(name) for name in ("openvino", "nncf"))
needs_openvino = pytest.mark.skipif(not INSTALLED, reason="openvino/nncf not installed (pip install -e '.[openvino]')")


def _records(cwd: Path) -> dict[str, dict]:
    paths = sorted(cwd.glob("results/suites/*/*/run-*/cells/*/record.json"))
    return {json.loads(p.read_text())["cell"]: json.loads(p.read_text()) for p in paths}


def _assert_int8_close(record: dict) -> None:
    """Kernel int8, >= 90 % of MACs in integer kernels, deployed top-1 within 1 pt of FP32 and of the simulation."""
    m, t = record["metrics"], record["tags"]
    assert record["status"] == "finished" and t["kernel"] == "int8", record.get("error")
    assert m["opmix.integer_mac_share"] >= 0.9 and m["opmix.mac_coverage"] == pytest.approx(1.0, abs=0.01)
    assert abs(m["acc.top1"] - m["acc.fp32_top1"]) <= 0.01 and abs(m["acc.gap_top1"]) <= 0.01
    assert m["acc.agreement_simulated"] >= 0.98
    assert t["openvino.inference_num_threads"] == t["threads"].split("x")[0]
    assert t["openvino.performance_hint"] == "LATENCY" and t["openvino.inference_precision_hint"] == "f32"


@needs_openvino
def test_digits_fp32_w8a8_and_weight_only_cells(run_qbench, tmp_path) -> None:
    out = run_qbench("run", "+suite=smoke", "quant=fp32,w8a8_pc,w8_wo", "backend=openvino", "tracking=none")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    records = _records(tmp_path)
    fp32 = records["digits_cnn/fp32/openvino"]
    assert fp32["status"] == "finished" and fp32["tags"]["kernel"] == "fp32"
    assert fp32["metrics"]["opmix.integer_ops"] == 0 and "Convolution:f32=3" in fp32["tags"]["opmix.ops"]
    int8 = records["digits_cnn/w8a8-pc/openvino"]
    _assert_int8_close(int8)
    assert int8["tags"]["opmix.ops"] == "Convolution:u8=3,FullyConnected:u8=1"
    assert int8["tags"]["openvino.quantization"].startswith("static-qdq")
    # NNCF's int8 weight compression of the one Linear layer: convolutions stay float, so the kernel says mixed
    wo = records["digits_cnn/w8-wo-pc/openvino"]
    assert wo["status"] == "finished" and wo["tags"]["quant.layer_types"] == "Linear", wo.get("error")
    assert "FullyConnected:i8=1" in wo["tags"]["opmix.ops"] and wo["tags"]["kernel"] == "mixed"
    assert abs(wo["metrics"]["acc.gap_top1"]) <= 0.01


@needs_openvino
# mobilenet_v2 from NNCF crashed the CPU plugin with a dynamic batch (deploy.StaticShapes says why)
@pytest.mark.parametrize("model,source", [("resnet18", "qdq"), ("resnet18", "nncf"), ("mobilenet_v2", "nncf")])
def test_w8a8_pc_runs_in_int8_kernels(run_qbench, tmp_path, model, source) -> None:
    out = run_qbench("run", f"model={model}", "quant=w8a8_pc", "backend=openvino", f"backend.int8_source={source}",
                     "measure=quick", "tracking=none")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (path,) = tmp_path.glob("results/runs/*/record.json")
    record = json.loads(path.read_text())
    _assert_int8_close(record)
    assert model != "resnet18" or "Convolution:u8=20" in record["tags"]["opmix.ops"]
    assert record["tags"]["openvino.quantization"].startswith("static-qdq" if source == "qdq" else "nncf")
    assert record["cell"] == f"{model}/w8a8-pc/openvino" + ("/nncf" if source == "nncf" else "")


@needs_openvino
def test_onednn_isa_cap_runs_avx2_int8_kernels_with_the_avx2_path(run_qbench, tmp_path) -> None:
    """ONEDNN_MAX_CPU_ISA=AVX2: every compute layer runs an AVX2 oneDNN primitive (a VNNI host's stand-in for an
    AVX2-only CPU), ``auto`` picks the reduce-range path such a CPU needs, and the record says where it came from."""
    out = run_qbench("run", "quant=w8a8_pc", "backend=openvino", "measure=quick", "tracking=none",
                     env={"ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (path,) = tmp_path.glob("results/runs/*/record.json")
    record = json.loads(path.read_text())
    _assert_int8_close(record)
    t = record["tags"]
    primitives = dict(p.split("=") for p in t["openvino.primitives"].split(","))
    assert primitives and all("avx2" in name or "gemm" in name for name in primitives), primitives
    assert not any("avx512" in name or "amx" in name for name in primitives), primitives
    assert t["int8.path"] == "u8s8_reduce_range" and t["int8.kernel_isa"] == "avx2 (ONEDNN_MAX_CPU_ISA=AVX2)"
    assert t["env.cpu.isa_override"] == "ONEDNN_MAX_CPU_ISA=AVX2"


@pytest.mark.parametrize(
    "args,fragment,bad_config",
    [
        (("backend.int8_source=ort",), "backend.int8_source=ort", True),
        (("backend.graph_optimization_level=basic",), "backend.graph_optimization_level is a setting of", True),
        (("quant=w4a8_pc",), "W4A8: OpenVINO's CPU int8 kernels are int8 x int8", False),
        (("quant=dynamic8",), "quant.method=dynamic", False),
        (("quant=w8a8_pc", "quant.activations.observer=mse", "backend.int8_source=nncf"), "NNCF has minmax", False),
    ],
)
def test_bad_setting_or_unsupported_scheme_is_one_line(run_qbench, tmp_path, args, fragment, bad_config) -> None:
    out = run_qbench("run", "backend=openvino", *args)
    assert out.returncode == 2
    # a bad setting is refused whatever is installed; without the package a valid cell is unsupported for that reason
    expected = fragment if INSTALLED or bad_config else "not installed"
    assert expected in out.stderr and out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr


def test_cells_are_skipped_with_the_reason_where_openvino_is_absent(compose, monkeypatch) -> None:
    import qbench.backends.base as backend_base

    monkeypatch.setattr(backend_base, "find_spec", lambda name: None)
    nncf = qconfig.validate(compose("backend=openvino", "quant=w8a8_pc", "backend.int8_source=nncf"))
    assert get_backend("openvino").unsupported_reason(nncf) == (
        'openvino and nncf not installed (pip install -e ".[openvino]")')
    for quant in ("fp32", "w8a8_pc"):  # qbench's QDQ model needs no NNCF
        cfg = qconfig.validate(compose("backend=openvino", f"quant={quant}"))
        reason = get_backend("openvino").unsupported_reason(cfg)
        assert reason == 'openvino not installed (pip install -e ".[openvino]")'
