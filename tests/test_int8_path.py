"""The int8 path chosen from the CPU's ISA, and the simulation of a non-VNNI CPU's int8 arithmetic, checked
against hand-computed cases and against fbgemm's real AVX2 kernels (FBGEMM_ENABLE_INSTRUCTIONS=AVX2)."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qbench import config as qconfig
from qbench.measure.env import cpu_flags
from qbench.quant import int8_path
from qbench.quant.isa_emulation import saturation_error

AVX2_ONLY = {"avx2", "fma"}
VNNI = {"avx2", "avx512f", "avx512bw", "avx512_vnni"}


def _quant(compose, *overrides: str) -> object:
    return qconfig.validate(compose(*overrides))


@pytest.mark.parametrize(("backend", "flags", "machine", "expected", "weight_bits"), [
    ("onnxruntime", AVX2_ONLY, "x86_64", "u8s8_reduce_range", 7),
    ("torch_int8", AVX2_ONLY, "x86_64", "u8s8_reduce_range", 7),
    ("onnxruntime", {"avx2", "avx512bw"}, "x86_64", "u8s8_reduce_range", 7),  # AVX-512 without VNNI
    ("onnxruntime", VNNI, "x86_64", "u8s8", 8),
    ("torch_int8", {"avx2", "avx_vnni"}, "x86_64", "u8s8", 8),
    ("onnxruntime", VNNI | {"amx_int8"}, "x86_64", "u8s8", 8),
    ("onnxruntime", {"asimd", "asimddp"}, "aarch64", "u8s8", 8),
    ("torch", AVX2_ONLY, "x86_64", "u8s8", 8),  # the simulation backend has no kernels
])
def test_auto_follows_the_cpu(compose, monkeypatch, backend, flags, machine, expected, weight_bits) -> None:
    monkeypatch.delenv("FBGEMM_ENABLE_INSTRUCTIONS", raising=False)
    monkeypatch.setattr(platform, "machine", lambda: machine)
    cfg = _quant(compose, "quant=w8a8_pc", f"backend={backend}")
    path = int8_path.resolve(backend, cfg.quant, "auto", flags=set(flags))
    assert (path.path, path.weight_bits) == (expected, weight_bits)
    assert path.reason.startswith("auto")


@pytest.mark.parametrize("cap,host,expected", [
    ("AVX2", VNNI | {"amx_int8"}, "avx2"),  # the AVX2 int8 kernels on a VNNI/AMX host: pairs saturate
    ("avx512_core", VNNI, "avx512"),
    ("AVX512_CORE_VNNI", VNNI | {"amx_int8"}, "vnni"),
    ("AVX512_CORE_AMX", AVX2_ONLY, "avx2"),  # a cap never raises the host's own class
])
def test_onednn_isa_cap_decides_openvinos_kernels_only(compose, monkeypatch, cap, host, expected) -> None:
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert int8_path.kernel_isa("openvino", set(host)) == (expected, f"ONEDNN_MAX_CPU_ISA={cap.upper()}")
    # ONNX Runtime's MLAS and fbgemm do not read oneDNN's cap
    assert int8_path.kernel_isa("onnxruntime", set(host))[1] == "cpuinfo"
    cfg = _quant(compose, "quant=w8a8_pc", "backend=openvino")
    path = int8_path.resolve("openvino", cfg.quant, "auto", flags=set(host))
    assert path.path == ("u8s8_reduce_range" if expected in ("avx2", "avx512") else "u8s8")


def test_an_isa_override_is_part_of_the_host_id(monkeypatch) -> None:
    from qbench.measure.env import fingerprint, host_id

    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("FBGEMM_ENABLE_INSTRUCTIONS", raising=False)
    plain = fingerprint()
    assert plain["cpu.isa_override"] == "none"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    capped = fingerprint()
    assert capped["cpu.isa_override"] == "ONEDNN_MAX_CPU_ISA=AVX2"
    # figures from capped kernels are not comparable with the host's own: another host id
    assert host_id(capped) != host_id(plain)
    assert host_id({**plain, "cpu.isa_override": "none"}) == host_id({k: v for k, v in plain.items()
                                                                      if k != "cpu.isa_override"})


def test_explicit_paths_targets_and_schemes_it_does_not_apply_to(compose, monkeypatch) -> None:
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    cfg = _quant(compose, "quant=w8a8_pc", "backend=onnxruntime")
    assert int8_path.resolve("onnxruntime", cfg.quant, "u8s8", flags=set(AVX2_ONLY)).path == "u8s8"
    assert int8_path.resolve("onnxruntime", cfg.quant, "u8u8", flags=set(AVX2_ONLY)).weight_bits == 8
    # a named target ISA decides auto, on whatever host: what an AVX2 fleet would deploy
    avx2 = _quant(compose, "quant=w8a8_pc", "backend=onnxruntime", "quant.target_isa=avx2")
    assert int8_path.resolve("onnxruntime", avx2.quant, "auto", flags=set(VNNI)).path == "u8s8_reduce_range"
    # emulation only where pairs can saturate: the full-range path on a non-VNNI target
    full = int8_path.resolve("onnxruntime", avx2.quant, "u8s8")
    assert int8_path.emulated_isa(avx2.quant, full, "onnxruntime") == "avx2"
    reduced = int8_path.resolve("onnxruntime", avx2.quant, "u8s8_reduce_range")
    assert int8_path.emulated_isa(avx2.quant, reduced, "onnxruntime") is None
    vnni = _quant(compose, "quant=w8a8_pc", "quant.target_isa=vnni")
    assert int8_path.emulated_isa(vnni.quant, full, "torch") is None
    for scheme in ("fp32", "w4a8_pc", "w4_wo"):
        other = _quant(compose, f"quant={scheme}", "backend=onnxruntime")
        assert int8_path.resolve("onnxruntime", other.quant, "auto").path == "none"
    dynamic = _quant(compose, "quant=dynamic8", "backend=torch_int8")
    path = int8_path.resolve("torch_int8", dynamic.quant, "auto")
    assert (path.path, path.activation_bits) == ("u7s8", 7)  # quantized::linear_dynamic(reduce_range=True)
    effective = int8_path.effective_quant(dynamic.quant, path)
    assert effective.activations.bits == 7 and dynamic.quant.activations.bits == 8  # a copy


def test_cell_names_and_validation(compose) -> None:
    cfg = _quant(compose, "model=resnet18", "quant=w8a8_pc", "backend=onnxruntime", "backend.int8_path=u8s8")
    assert qconfig.cell_name(cfg) == "resnet18/w8a8-pc/onnxruntime/u8s8"
    auto = _quant(compose, "model=resnet18", "quant=w8a8_pc", "backend=onnxruntime")
    assert qconfig.cell_name(auto) == "resnet18/w8a8-pc/onnxruntime"  # auto is the default: not in the name
    target = _quant(compose, "quant=w8a8_pc", "quant.target_isa=avx2")
    assert qconfig.scheme_label(target.quant) == "w8a8-pc@avx2"
    with pytest.raises(qconfig.ConfigError, match=r"valid values: auto, u8s8, u8s8_reduce_range, u8u8"):
        _quant(compose, "backend=onnxruntime", "backend.int8_path=u8s7")
    with pytest.raises(qconfig.ConfigError, match=r"quant\.target_isa=sse4: invalid value; valid values: none, host"):
        _quant(compose, "quant.target_isa=sse4")


def _brute_force_error(layer: nn.Module, codes: torch.Tensor, zp: int, w: torch.Tensor) -> torch.Tensor:
    """Explicit loops over output elements: the vpmaddubsw definition, written as plainly as possible."""
    if isinstance(layer, nn.Linear):
        rows = [codes[i].tolist() for i in range(codes.shape[0])]
        out = torch.zeros(codes.shape[0], w.shape[0])
        for n, row in enumerate(rows):
            for o in range(w.shape[0]):
                ws = w[o].tolist() + [0] * (len(row) % 2)
                xs = row + [0] * (len(row) % 2)
                for j in range(0, len(xs), 2):
                    pair = xs[j] * ws[j] + xs[j + 1] * ws[j + 1]
                    out[n, o] += max(-32768, min(32767, pair)) - pair
        return out
    padded = F.pad(codes - zp, [layer.padding[1]] * 2 + [layer.padding[0]] * 2) + zp
    batch, _, height, width = padded.shape
    out_channels, per_group, kh, kw = w.shape
    groups = layer.groups
    oh = (height - kh) // layer.stride[0] + 1
    ow = (width - kw) // layer.stride[1] + 1
    out = torch.zeros(batch, out_channels, oh, ow)
    for b in range(batch):
        for o in range(out_channels):
            g = o // (out_channels // groups)
            for y in range(oh):
                for x in range(ow):
                    xs, ws = [], []
                    for r in range(kh):
                        for s in range(kw):
                            for c in range(per_group):  # channel innermost: the NHWC reduction order
                                xs.append(float(padded[b, g * per_group + c, y * layer.stride[0] + r,
                                                       x * layer.stride[1] + s]))
                                ws.append(float(w[o, c, r, s]))
                    if len(xs) % 2:
                        xs.append(0.0)
                        ws.append(0.0)
                    for j in range(0, len(xs), 2):
                        pair = xs[j] * ws[j] + xs[j + 1] * ws[j + 1]
                        out[b, o, y, x] += max(-32768, min(32767, pair)) - pair
    return out


def test_saturation_error_hand_computed_pair() -> None:
    layer = nn.Linear(3, 1, bias=False)
    codes = torch.tensor([[255.0, 255.0, 255.0]])
    w = torch.tensor([[127, 127, 127]], dtype=torch.int8)
    # pair (255*127 + 255*127) = 64770 saturates to 32767; the odd third product is paired with a zero
    assert saturation_error(layer, codes, 0, w).tolist() == [[32767.0 - 64770.0]]
    assert saturation_error(layer, codes, 0, torch.tensor([[64, 64, 127]], dtype=torch.int8)) is None


@pytest.mark.parametrize(("channels", "groups", "kernel", "stride", "padding"), [
    (3, 1, (3, 3), (1, 1), (1, 1)), (4, 2, (3, 2), (2, 1), (1, 0)), (5, 5, (3, 3), (1, 1), (1, 1))])
def test_saturation_error_matches_the_definition(channels, groups, kernel, stride, padding) -> None:
    gen = torch.Generator().manual_seed(channels)
    layer = nn.Conv2d(channels, 2 * groups, kernel, stride, padding, groups=groups, bias=False)
    codes = torch.randint(100, 256, (2, channels, 5, 6), generator=gen).float()
    w = torch.randint(-127, 128, layer.weight.shape, generator=gen).to(torch.int8)
    zp = 37
    expected = _brute_force_error(layer, codes, zp, w)
    assert (expected != 0).any()  # the case exercises saturation
    assert torch.equal(saturation_error(layer, codes, zp, w), expected)
    linear = nn.Linear(7, 3, bias=False)
    lin_codes = torch.randint(150, 256, (4, 7), generator=gen).float()
    lin_w = torch.randint(-127, 128, (3, 7), generator=gen).to(torch.int8)
    assert torch.equal(saturation_error(linear, lin_codes, 0, lin_w), _brute_force_error(linear, lin_codes, 0, lin_w))


# ------------------------------------------------------------------------ against fbgemm's real AVX2 kernels
needs_avx2 = pytest.mark.skipif(platform.machine() != "x86_64" or "avx2" not in cpu_flags(),
                                reason="fbgemm's AVX2 kernels need an x86-64 CPU with AVX2")
_FAST = ["measure=quick", "measure.energy.duration_s=0", "measure.latency.throughput_batch_size=0",
         "measure.latency.min_calls=5", "measure.latency.min_duration_s=0.05", "measure.latency.warmup_s=0",
         "tracking=none"]


def _run_cell(run_qbench, tmp_path: Path, name: str, *overrides: str) -> dict:
    cwd = tmp_path / name
    cwd.mkdir()
    proc = run_qbench("run", "model=resnet18", "quant=w8a8_pc", "backend=torch_int8",
                      "backend.quantized_engine=fbgemm", *_FAST, *overrides, cwd=cwd,
                      env={"FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (path,) = cwd.glob("results/runs/*/record.json")
    return json.loads(path.read_text())


@needs_avx2
def test_avx2_kernels_full_range_loss_is_predicted_and_auto_avoids_it(run_qbench, tmp_path) -> None:
    """On fbgemm's AVX2 kernels: the full-range u8s8 model loses accuracy to int16 pair saturation; the
    simulation with quant.target_isa=avx2 predicts the deployed top-1 within 2 of 360 images; auto deploys
    7-bit weights and stays within 1 pt of FP32 and of its simulation."""
    full = _run_cell(run_qbench, tmp_path, "full", "backend.int8_path=u8s8")
    predicted = _run_cell(run_qbench, tmp_path, "predicted", "backend.int8_path=u8s8", "quant.target_isa=avx2")
    auto = _run_cell(run_qbench, tmp_path, "auto")
    fm, pm, am = full["metrics"], predicted["metrics"], auto["metrics"]
    assert full["tags"]["int8.kernel_isa"] == "avx2 (FBGEMM_ENABLE_INSTRUCTIONS=AVX2)"
    # the exact simulation misses the loss: that is the deployment gap the gate flags
    assert fm["acc.gap_top1"] < -0.01 and fm["acc.agreement_simulated"] < 0.98
    # the emulated simulation reproduces the real kernel
    assert abs(pm["acc.top1_simulated"] - pm["acc.top1"]) <= 2 / 360 + 1e-9
    assert pm["acc.agreement_simulated"] >= 0.98 and predicted["tags"]["quant.emulated_isa"] == "avx2"
    assert pm["acc.top1"] == pytest.approx(fm["acc.top1"])  # same deployed model either way
    assert auto["tags"]["int8.path"] == "u8s8_reduce_range" and "no VNNI" in auto["tags"]["int8.path_reason"]
    assert auto["tags"]["kernel"] == "int8"
    assert abs(am["acc.gap_top1"]) <= 0.01 and am["acc.agreement_fp32"] >= 0.99
    assert am["acc.top1"] >= fm["acc.top1"] + 0.01


@needs_avx2
def test_forced_full_range_on_avx2_kernels_is_flagged_by_summary_compare_and_check(run_qbench, tmp_path) -> None:
    """The acceptance path on fbgemm's AVX2 kernels: a suite whose int8 cell forces u8s8 loses accuracy, and the
    deployment-gap gate flags it in the suite summary, in `qbench compare` and in `qbench check` (exit 1)."""
    env = {"FBGEMM_ENABLE_INSTRUCTIONS": "AVX2", "COLUMNS": "250"}
    fast = [a for a in _FAST if a != "tracking=none"]
    run = run_qbench("run", "-m", "model=digits_cnn", "quant=w8a8_pc", "backend=torch_int8",
                     "backend.quantized_engine=fbgemm", "backend.int8_path=u8s8", *fast, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "⚠ gap" in run.stdout and "saturate in int16" in run.stdout
    compare = run_qbench("compare", "--suite", "sweep", env=env)
    assert compare.returncode == 0, compare.stdout[-2000:] + compare.stderr[-2000:]
    assert "digits_cnn/w8a8-pc/torch_int8/u8s8" in compare.stdout and "gap" in compare.stdout
    check = run_qbench("check", "--suite", "sweep", "--baselines-dir", str(tmp_path / "baselines"), env=env)
    assert check.returncode == 1, check.stdout[-3000:] + check.stderr[-3000:]
    assert "deployment_gap" in check.stdout and "int8.kernel_isa=avx2 (FBGEMM_ENABLE_INSTRUCTIONS=AVX2)" in check.stdout
