"""Operation counts on layers whose MACs are computed by hand, BOPs vs bit-widths, the energy model, and
the energy counters' readers (RAPL on a fake sysfs tree, the CPU-time estimate)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from qbench.config import EnergyCosts, QuantConfig, TensorQuantConfig
from qbench.measure.energy import (
    EnergyWindow,
    LayerPrecision,
    RaplReader,
    mac_energy_pj,
    proxies,
    scheme_precision,
    window_metrics,
)
from qbench.measure.opcount import count_layers


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=1, padding=1)  # 32x32 out
        self.dw = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8)  # depthwise, 16x16 out
        self.fc = nn.Linear(8 * 16 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.dw(self.conv(x)), 1))


def test_macs_of_known_layers() -> None:
    counts = count_layers(Tiny(), (3, 32, 32))
    assert counts["conv"].macs == 8 * 32 * 32 * (3 * 3 * 3)  # out elements x Cin*kh*kw = 221184
    assert counts["dw"].macs == 8 * 16 * 16 * (1 * 3 * 3)  # depthwise: Cin/groups = 1
    assert counts["fc"].macs == 2048 * 10
    assert counts["fc"].weight_numel == 20480 and counts["conv"].kind == "conv"


def test_resnet18_macs_match_the_architecture() -> None:
    import torchvision

    counts = count_layers(torchvision.models.resnet18(num_classes=10), (3, 32, 32))
    assert len(counts) == 21
    # 1.81 GMACs at 224x224 scale by (32/224)^2 for the convs (the FC is 512x10)
    conv = sum(c.macs for c in counts.values() if c.kind == "conv")
    assert conv == pytest.approx(1.8135e9 * (32 / 224) ** 2, rel=0.1)


def _costs() -> EnergyCosts:
    return EnergyCosts()


def test_bops_scale_with_bit_widths() -> None:
    layers = count_layers(Tiny(), (3, 32, 32))
    names = list(layers)
    macs = sum(c.macs for c in layers.values())
    fp32 = proxies(layers, {}, _costs())
    w8a8 = proxies(layers, dict.fromkeys(names, LayerPrecision(8, 8, True)), _costs())
    w4a8 = proxies(layers, dict.fromkeys(names, LayerPrecision(4, 8, True)), _costs())
    assert fp32["opcount.macs"] == w8a8["opcount.macs"] == macs
    assert fp32["opcount.bops"] == macs * 32 * 32
    assert w8a8["opcount.bops"] == macs * 64 and w4a8["opcount.bops"] == w8a8["opcount.bops"] / 2
    # weight traffic halves again from 8 to 4 bits; the modelled total shrinks with the bits
    assert w4a8["energy.model_weight_dram_uj"] == pytest.approx(w8a8["energy.model_weight_dram_uj"] / 2)
    assert fp32["energy.model_total_uj"] > w8a8["energy.model_total_uj"] > w4a8["energy.model_total_uj"]


def test_mac_energy_uses_horowitz_costs() -> None:
    costs = _costs()
    assert mac_energy_pj(LayerPrecision(8, 8, True), costs) == pytest.approx(0.2 + 0.1)
    assert mac_energy_pj(LayerPrecision(32, 32, False), costs) == pytest.approx(3.7 + 0.9)
    assert mac_energy_pj(LayerPrecision(16, 8, True), costs) == pytest.approx(3.1 + 0.1)
    # weight-only: float arithmetic on dequantized weights
    assert mac_energy_pj(LayerPrecision(4, 32, False), costs) == pytest.approx(4.6)


def test_scheme_precision_per_method() -> None:
    quant = QuantConfig(method="weight_only", weights=TensorQuantConfig(bits=4), activations=TensorQuantConfig(bits=8))
    assert scheme_precision(quant, ["a"]) == {"a": LayerPrecision(4, 32, False)}
    quant.method = "ptq"
    assert scheme_precision(quant, ["a"]) == {"a": LayerPrecision(4, 8, True)}
    quant.method = "none"
    assert scheme_precision(quant, ["a"]) == {}


def _fake_rapl(root: Path, energy: int, max_range: int = 1000) -> Path:
    domain = root / "intel-rapl:0"
    domain.mkdir(parents=True, exist_ok=True)
    (domain / "energy_uj").write_text(f"{energy}\n")
    (domain / "max_energy_range_uj").write_text(f"{max_range}\n")
    sub = root / "intel-rapl:0:0"  # a sub-domain (core): not summed with the package
    sub.mkdir(exist_ok=True)
    (sub / "energy_uj").write_text("5\n")
    return domain


def test_rapl_reader_sums_packages_and_handles_wraparound(tmp_path: Path) -> None:
    domain = _fake_rapl(tmp_path, 900)
    reader = RaplReader(tmp_path)
    assert reader.available and len(reader.domains) == 1
    before = reader.read_uj()
    (domain / "energy_uj").write_text("100\n")  # wrapped: 900 -> 1000 -> 100
    assert reader.joules_between(before, reader.read_uj()) == pytest.approx(200 / 1e6)
    assert not RaplReader(tmp_path / "absent").available


def test_measured_and_estimated_energy_never_share_a_metric() -> None:
    measured, tags = window_metrics(EnergyWindow(calls=100, seconds=1.0, cpu_seconds=0.5, rapl_j=2.0, nvml_j=None), 7.5)
    assert measured["energy.rapl_mj_per_inference"] == pytest.approx(20.0)
    assert "energy.estimate_mj_per_inference" not in measured and tags["energy.source"] == "rapl"
    estimated, tags = window_metrics(EnergyWindow(100, 1.0, 0.5, None, None), 7.5)
    assert estimated["energy.estimate_mj_per_inference"] == pytest.approx(1e3 * 0.5 * 7.5 / 100)
    assert "energy.rapl_mj_per_inference" not in estimated and tags["energy.source"] == "estimate"
