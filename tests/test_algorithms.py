"""GPTQ, AWQ and SmoothQuant (qbench/quant/algorithms.py) on small synthetic models with outlier input channels:
each beats round-to-nearest on held-out inputs, GPTQ's codes are what the layer computes with, and layers the
algorithms do not handle (Conv2d) are left as they were."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from qbench.config import QuantConfig, TensorQuantConfig
from qbench.quant.affine import qrange
from qbench.quant.algorithms import LINEAR_ALGORITHMS, apply_algorithm
from qbench.quant.simulate import build_simulated_model, calibrate, quantized_layers

W4_G32 = TensorQuantConfig(bits=4, granularity="per_group", group_size=32, symmetric=True)


def _inputs(n: int, seed: int) -> torch.Tensor:
    """Correlated features (a fixed mixing), channels 3 and 17 twenty times larger than the others."""
    mixing = torch.randn(64, 64, generator=torch.Generator().manual_seed(0)) / 8 + torch.eye(64)
    x = torch.randn(n, 64, generator=torch.Generator().manual_seed(seed)) @ mixing
    x[:, [3, 17]] *= 20.0
    return x


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 96), nn.GELU(), nn.Linear(96, 48)).eval()


def _batches(x: torch.Tensor, size: int = 128) -> list[tuple[torch.Tensor, ...]]:
    return [(chunk,) for chunk in x.split(size)]


def _output_mse(model: nn.Module, reference: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x) - reference(x)).square().mean())


def _simulated(fp32: nn.Module, algorithm: str, quant: QuantConfig, options: dict | None = None) -> nn.Module:
    sim = build_simulated_model(fp32, quant)
    apply_algorithm(sim, algorithm, options or {}, _batches(_inputs(1024, seed=1)))
    return sim


@pytest.mark.parametrize("algorithm", ["gptq", "awq"])
def test_w4_group_beats_rtn(algorithm: str) -> None:
    fp32 = _mlp()
    quant = QuantConfig(method="weight_only", weights=W4_G32)
    held_out = _inputs(512, seed=2)
    rtn = _output_mse(_simulated(fp32, "rtn", quant), fp32, held_out)
    improved = _output_mse(_simulated(fp32, algorithm, quant), fp32, held_out)
    assert improved < 0.8 * rtn, f"{algorithm}: output MSE {improved:.3g} vs RTN {rtn:.3g}"


def test_gptq_without_act_order_and_per_channel_asymmetric_beat_rtn() -> None:
    fp32 = _mlp()
    held_out = _inputs(512, seed=2)
    for weights, options in ((W4_G32, {"act_order": False}),
                             (TensorQuantConfig(bits=4, granularity="per_channel", symmetric=False), {})):
        quant = QuantConfig(method="weight_only", weights=weights)
        rtn = _output_mse(_simulated(fp32, "rtn", quant), fp32, held_out)
        gptq = _output_mse(_simulated(fp32, "gptq", quant, options), fp32, held_out)
        assert gptq < rtn, f"{weights.granularity} {options}: GPTQ {gptq:.3g} vs RTN {rtn:.3g}"


def test_smoothquant_w8a8_per_tensor_beats_plain_w8a8() -> None:
    fp32 = _mlp()
    per_tensor = TensorQuantConfig(bits=8, granularity="per_tensor")
    quant = QuantConfig(method="ptq", weights=per_tensor, activations=per_tensor)
    calibration = _inputs(1024, seed=1)
    held_out = _inputs(512, seed=2)
    errors = {}
    for algorithm in ("rtn", "smoothquant"):
        sim = _simulated(fp32, algorithm, quant)
        calibrate(sim, calibration.split(128))
        errors[algorithm] = _output_mse(sim, fp32, held_out)
    assert errors["smoothquant"] < 0.5 * errors["rtn"], errors
    first = quantized_layers(sim)[0]
    assert first.input_smoothing is not None and first.input_smoothing.shape == (64,)
    assert "0.input_smoothing" in sim.state_dict()  # deployed with the model


@pytest.mark.parametrize("weights", [W4_G32, TensorQuantConfig(bits=4, granularity="per_group", group_size=48,
                                                                symmetric=False),
                                     TensorQuantConfig(bits=8, granularity="per_channel")])
def test_gptq_codes_are_on_the_grid_and_are_what_the_layer_computes_with(weights: TensorQuantConfig) -> None:
    sim = _simulated(_mlp(), "gptq", QuantConfig(method="weight_only", weights=weights))
    qmin, qmax = qrange(weights.bits, weights.symmetric)
    for layer in quantized_layers(sim):
        q = layer.weight_q
        assert q is not None and q.granularity == weights.granularity and q.shape == layer.layer.weight.shape
        assert int(q.codes.min()) >= qmin and int(q.codes.max()) <= qmax
        assert torch.equal(q.dequantize(), layer.weight())
        # GPTQ chose other codes than RTN for some weights, on the same kind of grid
        assert not torch.equal(q.dequantize(), layer.quantize_weight().dequantize())


def _conv_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10)).eval()


@pytest.mark.parametrize("algorithm", LINEAR_ALGORITHMS)
def test_only_linear_layers_change(algorithm: str) -> None:
    fp32 = _conv_net()
    quant = QuantConfig(method="weight_only", weights=TensorQuantConfig(bits=4, granularity="per_channel"))
    rtn = build_simulated_model(fp32, quant)
    sim = build_simulated_model(fp32, quant)
    x = torch.randn(64, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    figures = apply_algorithm(sim, algorithm, {}, [(x[:32],), (x[32:],)])
    conv, linear = quantized_layers(sim)
    conv_rtn, linear_rtn = quantized_layers(rtn)
    assert torch.equal(conv.weight(), conv_rtn.weight()) and conv.input_smoothing is None
    assert torch.equal(conv.layer.weight, conv_rtn.layer.weight)
    if algorithm == "rtn":
        assert figures == {}
        assert torch.equal(linear.weight(), linear_rtn.weight()) and linear.input_smoothing is None
        assert torch.equal(sim(x), rtn(x))
    else:
        assert figures["quant.algorithm_samples"] == 64 and figures["quant.algorithm_iterations"] > 0
        if algorithm == "gptq":
            assert not torch.equal(linear.weight(), linear_rtn.weight())
        else:  # AWQ may keep s = 1 (alpha = 0) on these plain random inputs
            assert linear.input_smoothing is not None
        assert not any(layer.float_forward for layer in quantized_layers(sim))


def test_unknown_algorithm_or_option_is_an_error() -> None:
    sim = build_simulated_model(_mlp(), QuantConfig(method="weight_only", weights=W4_G32))
    with pytest.raises(ValueError, match="valid values"):
        apply_algorithm(sim, "gptqq", {}, [])
    with pytest.raises(ValueError, match="valid keys"):
        apply_algorithm(sim, "gptq", {"dampp": 0.1}, [])
    # another algorithm's option is ignored (one options dict serves a sweep over algorithms)
    assert apply_algorithm(sim, "rtn", {"damp": 0.1}, []) == {}


class _Splits:
    """What apply_scheme reads of a task's splits: the calibration split's size and its batches."""

    def __init__(self, x: torch.Tensor) -> None:
        self.calibration = x

    def calibration_inputs(self, samples: int, batch_size: int) -> list[torch.Tensor]:
        return list(self.calibration[:samples].split(batch_size))


def test_a_cached_static_algorithm_result_is_cached_calibrated(tmp_path, monkeypatch) -> None:
    """SmoothQuant + static W8A8: the cell that computes it caches the calibrated model, the next loads it without
    calibrating again and computes the same outputs; an entry cached before calibration was is calibrated once
    and kept so."""
    import qbench.quant.simulate as simulate
    from qbench.quant import apply_scheme

    monkeypatch.setenv("QBENCH_CACHE", str(tmp_path))
    per_tensor = TensorQuantConfig(bits=8, granularity="per_tensor")
    quant = QuantConfig(method="ptq", algorithm="smoothquant", weights=per_tensor, activations=per_tensor)
    splits, held_out, fp32 = _Splits(_inputs(256, seed=1)), _inputs(64, seed=2), _mlp()
    first, stats = apply_scheme(fp32, quant, splits, cache_key="mlp")
    assert stats["quant.algorithm_cached"] == 0.0
    calibrations: list[int] = []
    real_calibrate = simulate.calibrate
    monkeypatch.setattr(simulate, "calibrate", lambda *a: (calibrations.append(1), real_calibrate(*a)))
    second, stats = apply_scheme(fp32, quant, splits, cache_key="mlp")
    assert stats["quant.algorithm_cached"] == 1.0 and not calibrations
    with torch.no_grad():
        assert torch.equal(first(held_out), second(held_out))
    (entry,) = (tmp_path / "algorithms").glob("*.pt")
    blob = torch.load(entry, weights_only=False)
    for layer in quantized_layers(blob["model"]):  # as an entry written before calibration was cached
        if layer.input_quantizer is not None:
            layer.input_quantizer.calibrated = False
    torch.save(blob, entry)
    third, _ = apply_scheme(fp32, quant, splits, cache_key="mlp")
    fourth, _ = apply_scheme(fp32, quant, splits, cache_key="mlp")
    assert len(calibrations) == 1
    with torch.no_grad():
        assert torch.equal(third(held_out), first(held_out)) and torch.equal(fourth(held_out), first(held_out))
