"""Fake-quant arithmetic against torch's own kernels, and error ordering across bits/granularities."""

from __future__ import annotations

import pytest
import torch

from qbench.config import TensorQuantConfig
from qbench.quant.affine import (
    compute_qparams,
    dequantize,
    fake_quantize,
    from_rows,
    qrange,
    quantize,
    quantize_tensor,
    to_rows,
)
from qbench.quant.observers import estimate_range


def _sqnr(ref: torch.Tensor, approx: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.pow(2).sum() / (ref - approx).pow(2).sum()))


@pytest.mark.parametrize("bits,symmetric", [(8, True), (8, False), (4, True), (4, False), (2, False), (6, True)])
def test_per_tensor_equals_torch(bits: int, symmetric: bool) -> None:
    g = torch.Generator().manual_seed(bits)
    x = torch.randn(64, 33, generator=g) * 3
    qmin, qmax = qrange(bits, symmetric)
    scale, zp = compute_qparams(x.min(), x.max(), bits, symmetric)
    ours = fake_quantize(x, scale, zp, qmin, qmax)
    theirs = torch.fake_quantize_per_tensor_affine(x, float(scale), int(zp), qmin, qmax)
    assert torch.equal(ours, theirs)
    # the integer path (codes + scale + zero point) gives the same values
    assert torch.equal(dequantize(quantize(x, scale, zp, qmin, qmax), scale, zp), theirs)


@pytest.mark.parametrize("bits,symmetric", [(8, True), (8, False), (4, True), (3, False)])
def test_per_channel_equals_torch(bits: int, symmetric: bool) -> None:
    g = torch.Generator().manual_seed(100 + bits)
    w = torch.randn(16, 8, 3, 3, generator=g) * torch.logspace(-2, 1, 16).reshape(16, 1, 1, 1)
    rows = to_rows(w, "per_channel")
    lo, hi = rows.amin(1), rows.amax(1)
    q = quantize_tensor(w, lo, hi, bits, symmetric, "per_channel")
    qmin, qmax = qrange(bits, symmetric)
    theirs = torch.fake_quantize_per_channel_affine(w, q.scale, q.zero_point, 0, qmin, qmax)
    assert torch.equal(q.dequantize(), theirs)
    assert q.codes.dtype in (torch.int8, torch.uint8)
    assert int(q.codes.min()) >= qmin and int(q.codes.max()) <= qmax


def test_codes_are_integers_within_range() -> None:
    w = torch.randn(8, 20)
    q = quantize_tensor(w, *estimate_range(to_rows(w, "per_group", 8), _spec(4, "per_group", 8)), 4, True,
                        "per_group", 8)
    assert q.codes.dtype == torch.int8 and q.codes.shape == w.shape
    assert q.scale.shape == (8 * 3,)  # 20 columns -> 3 groups of 8 (last one padded)
    assert int(q.codes.abs().max()) <= 7
    assert q.packed_nbytes() == (8 * 20 * 4) // 8 + 4 * 24


def test_row_view_roundtrip() -> None:
    w = torch.randn(6, 5, 3, 3)
    for gran, gs in (("per_tensor", 0), ("per_channel", 0), ("per_group", 16)):
        assert torch.equal(from_rows(to_rows(w, gran, gs), w.shape, gran), w)


def _spec(bits: int, granularity: str = "per_tensor", group_size: int = 128, observer: str = "minmax",
          symmetric: bool = True) -> TensorQuantConfig:
    return TensorQuantConfig(bits=bits, granularity=granularity, group_size=group_size, symmetric=symmetric,
                             observer=observer)


def _quant_error(w: torch.Tensor, spec: TensorQuantConfig) -> tuple[float, float]:
    rows = to_rows(w, spec.granularity, spec.group_size)
    q = quantize_tensor(w, *estimate_range(rows, spec), spec.bits, spec.symmetric, spec.granularity,
                        spec.group_size)
    approx = q.dequantize()
    return _sqnr(w, approx), float((w - approx).pow(2).mean())


def test_weight_sqnr_increases_with_bits() -> None:
    w = torch.randn(32, 64, 3, 3, generator=torch.Generator().manual_seed(0))
    sqnrs = [_quant_error(w, _spec(b, "per_channel"))[0] for b in (2, 4, 6, 8)]
    assert sqnrs == sorted(sqnrs) and len(set(sqnrs)) == 4, sqnrs
    # ~6 dB per bit for a uniform quantizer, once the 2-bit case is past
    assert sqnrs[3] - sqnrs[2] > 10


def test_per_channel_error_not_above_per_tensor_on_every_layer(reference_models) -> None:
    """On the trained reference models: per-channel MSE <= per-tensor MSE for every conv/linear weight."""
    checked = 0
    for model in reference_models.values():
        for name, module in model.named_modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                w = module.weight.detach()
                for bits in (4, 8):
                    _, mse_pt = _quant_error(w, _spec(bits, "per_tensor"))
                    _, mse_pc = _quant_error(w, _spec(bits, "per_channel"))
                    assert mse_pc <= mse_pt * (1 + 1e-6), (name, bits, mse_pc, mse_pt)
                    checked += 1
    assert checked > 100


def _heavy_tailed() -> torch.Tensor:
    x = torch.randn(1, 20000, generator=torch.Generator().manual_seed(1))
    x[0, :20] *= 40  # a few large outliers
    return x


def test_mse_observer_beats_minmax_on_heavy_tails() -> None:
    x = _heavy_tailed()
    _, hi = estimate_range(x, _spec(4, observer="mse"))
    assert float(hi) < float(x.max())
    # ratio 1.0 (min/max) is among the candidates, so the search can only do better
    assert _quant_error(x, _spec(4, observer="mse"))[1] < _quant_error(x, _spec(4))[1]
    milder = torch.randn(1, 20000, generator=torch.Generator().manual_seed(2))
    milder[0, :20] *= 8
    assert _quant_error(milder, _spec(4, observer="mse"))[1] < 0.5 * _quant_error(milder, _spec(4))[1]


def test_percentile_observer_clips_at_the_percentile() -> None:
    x = _heavy_tailed()
    spec = _spec(8, observer="percentile")
    spec.percentile = 99.0
    lo, hi = estimate_range(x, spec)
    expected = float(torch.quantile(x.abs(), 0.99))
    assert float(hi) == pytest.approx(expected, rel=1e-3) and float(lo) == -float(hi)
    spec.symmetric = False
    lo, hi = estimate_range(x, spec)
    assert float(lo) == pytest.approx(float(torch.quantile(x, 0.01)), rel=1e-3)
    assert float(hi) == pytest.approx(float(torch.quantile(x, 0.99)), rel=1e-3)


def test_histogram_observer_clips_outliers_but_keeps_the_bulk() -> None:
    x = _heavy_tailed()
    _, hi = estimate_range(x, _spec(8, observer="histogram"))
    assert float(x.abs().max()) > 40 and 3.0 < float(hi) < 0.5 * float(x.abs().max())


def test_mse_observer_finds_minimum_of_candidates() -> None:
    x = torch.randn(4, 500, generator=torch.Generator().manual_seed(3))
    lo, hi = estimate_range(x, _spec(3, "per_channel", observer="mse"))
    from qbench.quant.observers import MSE_CANDIDATES

    for r in range(4):
        base = float(x[r].abs().max())
        errors = []
        for ratio in MSE_CANDIDATES.tolist():
            s, z = compute_qparams(torch.tensor(-base * ratio), torch.tensor(base * ratio), 3, True)
            errors.append(float((x[r] - dequantize(quantize(x[r], s, z, -3, 3), s, z)).pow(2).mean()))
        chosen = max(abs(float(lo[r])), abs(float(hi[r]))) / base
        best = MSE_CANDIDATES[int(torch.tensor(errors).argmin())]
        assert abs(chosen - float(best)) < 1e-5
