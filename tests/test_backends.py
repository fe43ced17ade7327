"""Real integer backends (torch_int8, onnxruntime): accuracy against FP32, op mix, deployment gap,
capabilities, and the QAT deployment path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from qbench import config as qconfig
from qbench.backends import get_backend
from qbench.backends.deployment import DeployContext
from qbench.data import load_splits
from qbench.quant import apply_scheme, int8_path
from qbench.quant.simulate import quantized_layers


def _deploy(compose, reference_models, tmp_path: Path, model: str, quant: str, backend: str, *extra: str):
    """Deploy like a cell does: the int8 path for this CPU (backend.int8_path=auto), its simulation, the backend."""
    cfg = qconfig.validate(compose(f"model={model}", f"quant={quant}", f"backend={backend}", *extra))
    splits = load_splits(cfg.dataset, cfg.model)
    fp32 = reference_models[model]
    deploy_cfg, emulate, tags = int8_path.for_cell(cfg)
    sim, _ = apply_scheme(fp32, deploy_cfg.quant, splits, None, emulate)
    context = DeployContext(deploy_cfg, fp32, splits, tmp_path, sim, int8_path=tags.get("int8.path", "none"))
    return get_backend(backend).deploy(context), splits, sim


def _top1(outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> float:
    (logits,) = outputs.values()
    return float((logits.argmax(1) == labels).float().mean())


@pytest.mark.parametrize("backend", ["torch_int8", "onnxruntime"])
@pytest.mark.parametrize("model", ["digits_cnn", "resnet18", "mobilenet_v2"])
def test_w8a8_per_channel_within_one_point_of_fp32(compose, reference_models, tmp_path, model, backend) -> None:
    deployment, splits, _ = _deploy(compose, reference_models, tmp_path, model, "w8a8_pc", backend)
    x, y = splits.evaluation.tensors
    with torch.inference_mode():
        fp32 = _top1({"output": reference_models[model](x)}, y)
    deployed = _top1(deployment(splits.named(x)), y)
    assert deployment.kernel == "int8"
    assert abs(deployed - fp32) <= 0.01, f"{model} on {backend}: fp32 {fp32:.4f} int8 {deployed:.4f}"


def test_ort_op_mix_resnet18_int8_vs_fp32(compose, reference_models, tmp_path) -> None:
    int8, _, _ = _deploy(compose, reference_models, tmp_path / "q", "resnet18", "w8a8", "onnxruntime")
    assert int8.metrics["opmix.integer_conv_share"] > 0.9
    assert int8.metrics["opmix.conv_ops"] == 20 and int8.metrics["opmix.mac_coverage"] == pytest.approx(1.0)
    assert "QLinearConv=20" in int8.tags["opmix.ops"]
    fp32, _, _ = _deploy(compose, reference_models, tmp_path / "f", "resnet18", "fp32", "onnxruntime")
    assert fp32.metrics["opmix.integer_conv_share"] == 0.0 and fp32.metrics["opmix.integer_ops"] == 0
    assert fp32.kernel == "fp32"
    # weight bytes by dtype of the deployed files: ~11.2 M int8 weights vs ~44.7 MB of float32
    from qbench.measure.size import onnx_bytes_by_dtype

    int8_bytes, fp32_bytes = onnx_bytes_by_dtype(int8.artifacts[0]), onnx_bytes_by_dtype(fp32.artifacts[0])
    assert 11.0e6 < int8_bytes["int8"] < 11.3e6 and int8_bytes.get("float32", 0) < 0.2e6
    assert fp32_bytes["float32"] > 44e6 and "int8" not in fp32_bytes


def test_ort_layer_profile_times_every_layer_in_fp32_and_int8(compose, reference_models, tmp_path) -> None:
    """ONNX Runtime's profiler, mapped back to qbench's layer names through the initializers the optimized graphs keep
    (``<layer>.bias`` of the fused NCHWc FP32 convolutions, ``<layer>.weight_quantized`` of QLinearConv)."""
    layers = [n for n, m in reference_models["resnet18"].named_modules()
              if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    assert len(layers) == 21
    for quant in ("fp32", "w8a8_pc"):
        deployment, splits, _ = _deploy(compose, reference_models, tmp_path / quant, "resnet18", quant, "onnxruntime")
        assert deployment.profile_layers is not None
        sample = splits.named(splits.evaluation.tensors[0][:1])
        times = deployment.profile_layers(deployment.prepare(sample), layers)
        assert set(times) == set(layers), quant
        assert all(t > 0 for t in times.values())
        assert not list(tmp_path.glob(f"{quant}/ort_profile*.json"))  # the trace is read and removed


def test_layer_profile_is_recorded_or_says_why_not(run_qbench, tmp_path) -> None:
    out = run_qbench("run", "+suite=smoke", "quant=w8a8_pc", "backend=onnxruntime,torch", "measure.layer_profile=true",
                     "tracking=none")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    records = {json.loads(p.read_text())["cell"]: json.loads(p.read_text())
               for p in tmp_path.glob("results/suites/*/*/run-*/cells/*/record.json")}
    ort = records["digits_cnn/w8a8-pc/onnxruntime"]
    (path,) = [a for a in ort["artifacts"] if a.endswith("layer_times.json")]
    profile = json.loads(Path(path).read_text())
    assert profile["unit"] == "us_per_call" and len(profile["layers"]) == ort["metrics"]["profile.layers_timed"] >= 4
    assert ort["tags"]["profile.layers"].startswith("onnxruntime profiler")
    torch_cell = records["digits_cnn/w8a8-pc/torch"]
    assert torch_cell["tags"]["profile.layers"] == "unavailable: backend torch has no per-layer profile"


def test_ort_weight_only_uses_matmulnbits_and_says_convs_stay_float(compose, reference_models, tmp_path) -> None:
    deployment, splits, _ = _deploy(compose, reference_models, tmp_path, "digits_cnn", "w4_wo", "onnxruntime")
    assert "MatMulNBits=1" in deployment.tags["opmix.ops"]
    assert deployment.metrics["opmix.integer_conv_share"] == 0.0
    assert deployment.kernel == "mixed" and "partly integer" in deployment.tags["opmix.verdict"]
    x, y = splits.evaluation.tensors
    assert _top1(deployment(splits.named(x)), y) > 0.95


def test_torch_int8_runs_qbench_codes_exactly(compose, reference_models, tmp_path) -> None:
    deployment, _, sim = _deploy(compose, reference_models, tmp_path, "resnet18", "w8a8_pc", "torch_int8")
    model = deployment.runtime  # the converted module the deployment runs
    for layer in quantized_layers(sim):
        quantized = model.get_submodule(layer.name).weight()
        assert torch.equal(quantized.int_repr(), layer.weight_q.codes), layer.name
        assert torch.allclose(quantized.q_per_channel_scales().float(), layer.weight_q.scale)
    assert "shared_kept" in deployment.tags["torch.injected"]


def test_torch_int8_dynamic_quantizes_linear_only(compose, reference_models, tmp_path) -> None:
    deployment, _, _ = _deploy(compose, reference_models, tmp_path, "resnet18", "dynamic8", "torch_int8")
    assert deployment.tags["opmix.ops"] == "dynamic.Linear=1,float.Conv2d=20"
    assert deployment.kernel == "mixed"


def test_gemm_to_matmul_rewrite_is_exact(tmp_path) -> None:
    import onnxruntime as ort

    from qbench.backends.onnxruntime.export import export_onnx
    from qbench.backends.onnxruntime.quantize import gemm_to_matmul

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    path = export_onnx(model, (3, 2, 2), tmp_path / "m.onnx", 18)
    import onnx

    proto = onnx.load(str(path))
    assert gemm_to_matmul(proto) == 2
    onnx.save(proto, str(tmp_path / "mm.onnx"))
    x = np.random.default_rng(0).standard_normal((4, 3, 2, 2)).astype(np.float32)
    a = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    b = ort.InferenceSession(str(tmp_path / "mm.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not any(n.op_type == "Gemm" for n in proto.graph.node)


@pytest.mark.parametrize(
    "args,fragment",
    [
        (("quant=w4a8_pc", "quant.activations.bits=4", "backend=torch_int8"), "int8 x int8"),
        (("quant=w4_wo", "quant.weights.bits=3", "backend=torch_int8"), "3-bit weight-only"),
        (("quant=w4a8_pc", "quant.activations.bits=4", "backend=onnxruntime"), "int8 only"),
        (("backend=onnxruntime", "backend.providers=[TensorrtExecutionProvider]"), "unavailable here (available:"),
    ],
)
def test_unsupported_single_cell_is_one_line_exit_2(run_qbench, tmp_path, args, fragment) -> None:
    out = run_qbench("run", *args)
    assert out.returncode == 2
    assert fragment in out.stderr and out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr
    assert not (tmp_path / "results").exists()


def test_qat_runs_end_to_end_and_deploys_to_onnxruntime(run_qbench, tmp_path) -> None:
    out = run_qbench("run", "model=digits_cnn", "quant=qat_w8a8_pc", "backend=onnxruntime", "measure=quick",
                     "tracking=none")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    (path,) = tmp_path.glob("results/runs/*/record.json")
    record = json.loads(path.read_text())
    m = record["metrics"]
    assert record["tags"]["kernel"] == "int8" and record["tags"]["ort.activation_qparams"] == "qat-learned"
    assert m["opmix.integer_conv_share"] == 1.0 and "QLinearConv=3" in record["tags"]["opmix.ops"]
    assert m["qat.train_time_s"] > 0 or m["qat.cached"] == 1.0
    assert m["acc.top1"] >= 0.96 and m["acc.agreement_simulated"] >= 0.97


def test_deployment_gap_metrics_are_in_mlflow_for_every_real_quantized_cell(run_qbench, tmp_path) -> None:
    out = run_qbench("run", "+suite=smoke", "quant=w8a8_pc,dynamic8,w4_wo", "backend=torch_int8,onnxruntime")
    assert out.returncode == 0, out.stdout[-3000:]
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/results/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["qbench"])
    cells = runs[runs["tags.qbench.status"] == "finished"]
    real_quantized = cells[cells["tags.kernel"].isin(["int8", "int4", "mixed"])]
    # w8a8-pc, dynamic and w4_wo on both backends (w4_wo: torch_int8's int4 kernel, ORT's MatMulNBits)
    assert len(real_quantized) == 6
    for column in ("metrics.acc.top1_simulated", "metrics.acc.agreement_simulated", "metrics.acc.gap_top1"):
        assert real_quantized[column].notna().all(), column
    assert (runs["tags.qbench.status"] == "skipped").sum() == 0


def test_simulation_quantizes_the_layers_the_backend_quantizes(compose, reference_models, run_qbench, tmp_path) -> None:
    """ONNX Runtime's weight-only MatMulNBits leaves convolutions float: the cell's simulation does the same, so
    its deployment gap compares like with like (it was flagged at 93 % agreement when the simulation quantized
    every conv to 4 bits)."""
    from qbench.backends import get_backend
    from qbench.quant.simulate import build_simulated_model

    cfg = qconfig.validate(compose("model=digits_cnn", "quant=w4_wo", "backend=onnxruntime"))
    assert get_backend("onnxruntime").native_layer_types(cfg) == ("Linear",)
    assert get_backend("torch").native_layer_types(cfg) == ("Conv2d", "Linear")
    sim = build_simulated_model(reference_models["digits_cnn"], cfg.quant, layer_types=("Linear",))
    assert {type(layer.layer).__name__ for layer in quantized_layers(sim)} == {"Linear"}
    out = run_qbench("run", "model=mobilenet_v2", "quant=w4_wo", "backend=onnxruntime", "measure=quick",
                     "measure.energy.duration_s=0", "measure.latency.throughput_batch_size=0", "tracking=none")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    (path,) = tmp_path.glob("results/runs/*/record.json")
    record = json.loads(path.read_text())
    assert record["tags"]["quant.layer_types"] == "Linear"
    assert record["metrics"]["acc.agreement_simulated"] >= 0.99 and abs(record["metrics"]["acc.gap_top1"]) <= 0.01
