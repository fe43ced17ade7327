"""backend=executorch: digits_cnn FP32 and W8A8-pc cells lowered to XNNPACK-delegated ``.pte`` programs that load and
run in ExecuTorch's runtime, int8 within a point of FP32 and of the simulation, the delegated share of the graph as
op mix, the skip reasons and bad settings. Skipped where the ``[executorch]`` extra is not installed, except the
checks that the capability answer says so."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from qbench import config as qconfig
from qbench.backends import get_backend

INSTALLED = all(importlib.util.find_spec(name) for name in ("executorch", "torchao"))
needs_executorch = pytest.mark.skipif(not INSTALLED,
                                      reason="executorch not installed (pip install -e '.[executorch]')")


def _records(cwd: Path) -> dict[str, dict]:
    paths = sorted(cwd.glob("results/suites/*/*/run-*/cells/*/record.json"))
    return {json.loads(p.read_text())["cell"]: json.loads(p.read_text()) for p in paths}


def _pte(record: dict) -> Path:
    (path,) = [Path(a) for a in record["artifacts"] if a.endswith(".pte")]
    assert path.stat().st_size == record["metrics"]["size.artifact_bytes"]
    return path


def _runs(path: Path) -> None:
    """The artifact loads in ExecuTorch's runtime and classifies a batch of 3 digits images."""
    import torch
    from executorch.runtime import Runtime

    (out,) = Runtime.get().load_program(path).load_method("forward").execute([torch.zeros(3, 1, 32, 32)])
    assert tuple(out.shape) == (3, 10)


def _assert_delegated(record: dict, kernel: str) -> None:
    m, t = record["metrics"], record["tags"]
    assert record["status"] == "finished" and t["kernel"] == kernel, record.get("error")
    assert m["opmix.delegated_op_share"] > 0.9 and m["opmix.delegated_mac_share"] > 0.9
    assert m["opmix.mac_coverage"] == pytest.approx(1.0, abs=0.01)
    assert t["executorch.threads"] == t["threads"].split("x")[0]


@needs_executorch
def test_digits_fp32_and_w8a8_pc_cells(run_qbench, tmp_path) -> None:
    # no paired FP32 window: the FP32 cell is in the same run, and each deployment lowers a program (seconds)
    out = run_qbench("run", "+suite=smoke", "quant=fp32,w8a8_pc", "backend=executorch", "tracking=none",
                     "measure.paired.enabled=false")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    records = _records(tmp_path)
    fp32 = records["digits_cnn/fp32/executorch"]
    _assert_delegated(fp32, "fp32")
    assert fp32["metrics"]["opmix.integer_ops"] == 0
    assert fp32["tags"]["opmix.ops"] == "xnnpack:fp32.convolution=3,xnnpack:fp32.linear=1"
    # FP32 through XNNPACK: the torch model's answers (top-1 98.61 % here)
    assert abs(fp32["metrics"]["acc.top1"] - fp32["metrics"]["acc.fp32_top1"]) <= 0.002
    int8 = records["digits_cnn/w8a8-pc/executorch"]
    _assert_delegated(int8, "int8")
    m, t = int8["metrics"], int8["tags"]
    assert t["opmix.ops"] == "xnnpack:int8.convolution=3,xnnpack:int8.linear=1" and m["opmix.integer_mac_share"] == 1
    # PT2E's own calibration, not qbench's grid: within a point of FP32 and of the simulation (98.61 / 98.61 / 98.61 %
    # here), and said so
    assert abs(m["acc.top1"] - fp32["metrics"]["acc.top1"]) <= 0.01 and abs(m["acc.gap_top1"]) <= 0.01
    assert t["executorch.quantization"].startswith("pt2e XNNPACKQuantizer") and "not qbench's" in t["executorch.grid"]
    assert t["executorch.activation_observer"].startswith("MinMaxObserver")
    assert t["executorch.weight_observer"].startswith("PerChannelMinMaxObserver")
    assert _pte(int8).stat().st_size < _pte(fp32).stat().st_size / 2
    for record in (fp32, int8):
        _runs(_pte(record))


@needs_executorch
@pytest.mark.slow
def test_resnet18_w8a8_pc_runs_in_delegated_int8(run_qbench, tmp_path) -> None:
    out = run_qbench("run", "model=resnet18", "quant=w8a8_pc", "backend=executorch", "measure=quick", "tracking=none")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (path,) = tmp_path.glob("results/runs/*/record.json")
    record = json.loads(path.read_text())
    _assert_delegated(record, "int8")
    m = record["metrics"]
    assert m["opmix.integer_mac_share"] >= 0.9 and abs(m["acc.top1"] - m["acc.fp32_top1"]) <= 0.01
    assert "xnnpack:int8.convolution=20" in record["tags"]["opmix.ops"]


@pytest.mark.parametrize(
    "args,fragment,bad_config",
    [
        (("backend.observers=nncf",), "backend.observers=nncf", True),
        (("backend.int8_source=nncf",), "backend.int8_source is a setting of backend=openvino", True),
        (("quant=w4a8_pc",), "W4A8: XNNPACK's static quantized kernels are int8 x int8", False),
        (("quant=w4_wo",), "4-bit weight-only: XNNPACK has no weight-only kernel", False),
        (("quant=qat_w8a8_pc",), "QAT: qbench's learned scales do not reach the PT2E XNNPACK quantizer", False),
        (("quant=w8a8_pc", "quant.activations.observer=mse"), "activations observer mse", False),
    ],
)
def test_bad_setting_or_unsupported_scheme_is_one_line(run_qbench, args, fragment, bad_config) -> None:
    out = run_qbench("run", "backend=executorch", *args)
    assert out.returncode == 2
    # a bad setting is refused whatever is installed; without the package a valid cell is unsupported for that reason
    expected = fragment if INSTALLED or bad_config else "not installed"
    assert expected in out.stderr and out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr
    if args == ("backend.observers=nncf",):
        assert "qbench, xnnpack" in out.stderr  # the valid values


def test_cells_are_skipped_with_the_reason_where_executorch_is_absent(compose, monkeypatch) -> None:
    import qbench.backends.base as backend_base

    monkeypatch.setattr(backend_base, "find_spec", lambda name: None)
    for quant in ("fp32", "w8a8_pc"):
        cfg = qconfig.validate(compose("backend=executorch", f"quant={quant}"))
        assert get_backend("executorch").unsupported_reason(cfg) == (
            'executorch and torchao not installed (pip install -e ".[executorch]")')



@needs_executorch
def test_a_lowered_program_is_cached_and_reported_the_same(compose, reference_models, tmp_path, monkeypatch) -> None:
    """The second deployment of the same network loads the program the first one lowered: same bytes, outputs, op
    mix and tags, marked cached (FP32: the int8 lowering is the same path with PT2E first, seconds longer)."""
    import torch

    import qbench.backends.executorch.cache as et_cache
    from qbench.backends.deployment import DeployContext
    from qbench.data import load_splits

    monkeypatch.setattr(et_cache, "cache_folder", lambda: tmp_path / "programs")
    cfg = qconfig.validate(compose("model=digits_cnn", "quant=fp32", "backend=executorch"))
    splits = load_splits(cfg.dataset, cfg.model)

    def deploy(workdir: Path):
        return get_backend("executorch").deploy(DeployContext(cfg, reference_models["digits_cnn"], splits, workdir))

    first, second = deploy(tmp_path / "a"), deploy(tmp_path / "b")
    assert first.tags["executorch.lowering"].startswith("lowered in this cell")
    assert second.tags["executorch.lowering"].startswith("cached")
    assert "time.et_lower_s" in first.metrics and "time.et_lower_s" not in second.metrics
    assert first.artifacts[0].read_bytes() == second.artifacts[0].read_bytes()
    assert first.tags["opmix.ops"] == second.tags["opmix.ops"] == "xnnpack:fp32.convolution=3,xnnpack:fp32.linear=1"
    assert {k: v for k, v in first.metrics.items() if k.startswith("opmix.")} == {
        k: v for k, v in second.metrics.items() if k.startswith("opmix.")}
    batch = splits.named(splits.evaluation.tensors[0][:8])
    assert all(torch.equal(a, b) for a, b in zip(first(batch).values(), second(batch).values(), strict=True))
    assert len(list((tmp_path / "programs").glob("*.npz"))) == 1


@needs_executorch
def test_program_key_follows_weights_shapes_settings_and_calibration() -> None:
    import torch

    from qbench.backends.executorch.cache import program_key

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    example, calibration = (torch.zeros(8, 1, 8, 8),), [torch.ones(4, 1, 8, 8)]
    key = program_key(model, example, None, {"quantization": "pt2e"}, calibration)
    assert key == program_key(model, example, None, {"quantization": "pt2e"}, [torch.ones(4, 1, 8, 8)])
    assert key != program_key(model, (torch.zeros(4, 1, 8, 8),), None, {"quantization": "pt2e"}, calibration)
    assert key != program_key(model, example, None, {"quantization": "pt2e", "granularity": "per_tensor"},
                              calibration)
    assert key != program_key(model, example, None, {"quantization": "pt2e"}, [torch.zeros(4, 1, 8, 8)])
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] += 1e-3
    assert key != program_key(model, example, None, {"quantization": "pt2e"}, calibration)
