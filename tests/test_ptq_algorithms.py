"""CLE + bias correction, AdaRound and QDrop (qbench/quant/cle.py, adaround.py) on small hand-checkable models:
CLE leaves the float function unchanged and equalizes ranges, bias correction removes the mean output shift,
AdaRound / QDrop beat round-to-nearest on their calibration inputs with codes on the layer's own grid, the codes
ONNX Runtime deploys are the simulation's, options are validated in one line; the mobilenet_v2 acceptance is slow."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from qbench.config import QuantConfig, TensorQuantConfig
from qbench.quant.adaround import round_layer
from qbench.quant.affine import qrange
from qbench.quant.algorithms import apply_algorithm
from qbench.quant.cle import ChannelClamp, bias_correction, cross_layer_equalization, equalization_pairs
from qbench.quant.layerwise import float_network, layer_inputs
from qbench.quant.simulate import build_simulated_model, calibrate, quantized_layers

W4_PT = TensorQuantConfig(bits=4, granularity="per_tensor", symmetric=True)
A8 = TensorQuantConfig(bits=8, granularity="per_tensor", symmetric=False)
FAST = {"iterations": 200, "batch_size": 64}


def _images(n: int, seed: int, channels: int = 4) -> torch.Tensor:
    return torch.randn(n, channels, 8, 8, generator=torch.Generator().manual_seed(seed))


def _with_bn_ranges(model: nn.Module) -> nn.Module:
    """Give each BatchNorm per-channel scales spread over two orders of magnitude (what makes per-tensor grids
    fail after folding, as in mobilenet_v2's depthwise layers), and shifts."""
    gen = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.logspace(-1.5, 0.5, m.num_features)[torch.randperm(m.num_features, generator=gen)]
            m.bias.data = torch.randn(m.num_features, generator=gen) * 0.1
            m.running_mean.data = torch.randn(m.num_features, generator=gen) * 0.1
            m.running_var.data = torch.rand(m.num_features, generator=gen) + 0.5
    return model.eval()


def _conv_relu_conv() -> nn.Module:
    torch.manual_seed(0)
    return _with_bn_ranges(nn.Sequential(nn.Conv2d(4, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                         nn.Conv2d(16, 8, 3, padding=1)))


def _depthwise_block() -> nn.Module:
    """mobilenet_v2's inverted residual without the skip: expand 1x1 -> ReLU6 -> depthwise 3x3 -> ReLU6 -> 1x1."""
    torch.manual_seed(0)
    return _with_bn_ranges(nn.Sequential(
        nn.Conv2d(4, 24, 1), nn.BatchNorm2d(24), nn.ReLU6(),
        nn.Conv2d(24, 24, 3, padding=1, groups=24), nn.BatchNorm2d(24), nn.ReLU6(),
        nn.Conv2d(24, 8, 1), nn.BatchNorm2d(8)))


def _weight_only(weights: TensorQuantConfig = W4_PT) -> QuantConfig:
    return QuantConfig(method="weight_only", weights=weights)


def _mlp_without_bn() -> nn.Module:
    """No BatchNorm: not folded by torch.fx, so CLE traces the simulated model itself."""
    torch.manual_seed(0)
    return _Flat(nn.Sequential(nn.Linear(256, 32), nn.ReLU6(), nn.Linear(32, 10))).eval()


class _Flat(nn.Module):
    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.flatten(1))


@pytest.mark.parametrize("make,pairs", [(_conv_relu_conv, 1), (_depthwise_block, 2), (_mlp_without_bn, 1)])
def test_cle_keeps_the_float_function_and_equalizes_ranges(make, pairs: int) -> None:
    fp32 = make()
    x = _images(16, seed=1) * 4  # large enough that ReLU6 clips: its per-channel bounds must follow the scales
    sim = build_simulated_model(fp32, _weight_only())
    assert len(equalization_pairs(sim)) == pairs
    cross_layer_equalization(sim)
    with torch.no_grad(), float_network(sim):
        torch.testing.assert_close(sim(x), fp32(x), rtol=1e-5, atol=1e-5)
    for first, _, second in equalization_pairs(sim):
        if isinstance(first.layer, nn.Linear):
            continue
        w1, w2 = first.layer.weight, second.layer.weight
        r1 = w1.abs().flatten(1).amax(1)
        r2 = w2.abs().flatten(1).amax(1) if second.layer.groups > 1 else w2.abs().transpose(0, 1).flatten(1).amax(1)
        torch.testing.assert_close(r1, r2, rtol=1e-2, atol=1e-6)
    if make is not _conv_relu_conv:
        assert sum(isinstance(m, ChannelClamp) for m in sim.modules()) == pairs
        assert not any(isinstance(m, nn.ReLU6) for m in sim.modules())


def test_cle_lowers_the_per_tensor_w4_error() -> None:
    fp32, x = _depthwise_block(), _images(64, seed=1)
    errors = []
    for equalize in (False, True):
        sim = build_simulated_model(fp32, _weight_only())
        if equalize:
            cross_layer_equalization(sim)
        with torch.no_grad():
            errors.append(float((sim(x) - fp32(x)).square().mean()))
    assert errors[1] < 0.5 * errors[0], errors


def test_bias_correction_removes_the_mean_output_shift() -> None:
    fp32 = _depthwise_block()
    calibration, held_out = _images(256, seed=1), _images(256, seed=2)
    sim = build_simulated_model(fp32, _weight_only())

    def mean_shift() -> float:
        with torch.no_grad():
            return float((sim(held_out) - fp32(held_out)).mean(dim=(0, 2, 3)).abs().mean())

    before = mean_shift()
    assert bias_correction(sim, [(c,) for c in calibration.split(64)]) == 3
    assert mean_shift() < 0.5 * before


def _linear_case() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    mixing = torch.randn(32, 32, generator=torch.Generator().manual_seed(0)) / 6 + torch.eye(32)
    x = torch.randn(512, 32, generator=torch.Generator().manual_seed(1)) @ mixing
    return nn.Sequential(nn.Linear(32, 16)).eval(), x


def _output_mse(model: nn.Module, reference: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x) - reference(x)).square().mean())


@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel"])
def test_adaround_on_one_linear_beats_round_to_nearest(granularity: str) -> None:
    fp32, x = _linear_case()
    quant = _weight_only(TensorQuantConfig(bits=4, granularity=granularity, symmetric=True))
    rtn, sim = build_simulated_model(fp32, quant), build_simulated_model(fp32, quant)
    figures = apply_algorithm(sim, "adaround", FAST, [(c,) for c in x.split(128)])
    assert figures["quant.algorithm_iterations"] == 200 and figures["quant.algorithm_samples"] == 512
    assert _output_mse(sim, fp32, x) < 0.8 * _output_mse(rtn, fp32, x)
    (layer,), (layer_rtn,) = quantized_layers(sim), quantized_layers(rtn)
    q, q_rtn = layer.weight_q, layer_rtn.weight_q
    assert q is not None and q_rtn is not None
    # integer codes on the layer's own grid (same scale), some rounded the other way, one step at most
    assert torch.equal(q.scale, q_rtn.scale) and torch.equal(q.dequantize(), layer.weight())
    lo, hi = qrange(4, True)
    assert int(q.codes.min()) >= lo and int(q.codes.max()) <= hi
    moved = (q.codes.int() - q_rtn.codes.int()).abs()
    assert int(moved.sum()) > 0 and int(moved.max()) == 1


@pytest.mark.parametrize("activation_bits,factor", [(8, 0.85), (4, 0.97)])
def test_qdrop_with_activation_quantization_beats_round_to_nearest(activation_bits: int, factor: float) -> None:
    """QDrop reconstructs with half of the input elements unquantized, and is scored with all of them quantized:
    it still lowers the layer's output error vs round-to-nearest (at A4 the activations' own error dominates)."""
    fp32, x = _linear_case()
    quant = QuantConfig(method="ptq", weights=W4_PT,
                        activations=TensorQuantConfig(bits=activation_bits, symmetric=False))
    sim = build_simulated_model(fp32, quant)
    batches = [(c,) for c in x.split(128)]
    calibrate(sim, [b[0] for b in batches])
    (layer,) = quantized_layers(sim)
    x_fp = layer_inputs(sim, layer, batches, float_model=True)
    options = {**FAST, "seed": 0}
    codes, errors = round_layer(layer, x_fp, x_fp, options, drop_prob=0.5)
    assert errors["learned"] < factor * errors["rtn"], errors
    # drop_prob 0 is AdaRound: another rounding from the same start
    adaround_codes, _ = round_layer(layer, x_fp, x_fp, options, drop_prob=0.0)
    assert not torch.equal(codes.codes, adaround_codes.codes)


def test_unknown_option_is_one_line_naming_the_valid_ones(compose) -> None:
    from qbench import config as qconfig

    sim = build_simulated_model(_linear_case()[0], _weight_only())
    with pytest.raises(ValueError, match="valid keys for adaround: iterations, batch_size, lr") as info:
        apply_algorithm(sim, "adaround", {"iteration": 5}, [])
    assert "\n" not in str(info.value)
    with pytest.raises(qconfig.ConfigError, match=r"\['itrations'\]: unknown; valid keys for qdrop") as err:
        qconfig.validate(compose("quant=w4a8_pt_qdrop", "+quant.algorithm_options.itrations=3"))
    assert "\n" not in str(err.value) and "drop_prob" in str(err.value)
    with pytest.raises(qconfig.ConfigError, match="qdrop drops activation quantization"):
        qconfig.validate(compose("quant=w4_wo", "quant.algorithm=qdrop"))


def test_onnxruntime_deploys_the_adaround_codes(compose, reference_models, tmp_path) -> None:
    """digits_cnn W4A8 per-tensor AdaRound on ONNX Runtime: every weight initializer of the QDQ model holds
    exactly the simulation's codes (4-bit values in int8) and the deployed top-1 is the simulated one +- 1 pt."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from qbench import config as qconfig
    from qbench.backends import get_backend
    from qbench.backends.deployment import DeployContext
    from qbench.data import load_splits
    from qbench.quant import apply_scheme

    cfg = qconfig.validate(compose("model=digits_cnn", "quant=w4a8_pt_adaround", "backend=onnxruntime",
                                   "+quant.algorithm_options.iterations=100"))
    splits = load_splits(cfg.dataset, cfg.model)
    sim, stats = apply_scheme(reference_models["digits_cnn"], cfg.quant, splits)
    assert stats["quant.algorithm_iterations"] == 100 * len(quantized_layers(sim))
    deployment = get_backend("onnxruntime").deploy(DeployContext(cfg, reference_models["digits_cnn"], splits,
                                                                 tmp_path, sim))
    assert deployment.kernel == "int8" and "4-bit codes stored in int8" in deployment.tags["ort.weight_codes"]
    assert all(q.stored_bits == 8 for q in deployment.quantized_weights.values())
    graph = onnx.load(str(deployment.artifacts[0])).graph
    initializers = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for layer in quantized_layers(sim):
        assert layer.weight_q is not None
        (name,) = [n for n in initializers if n.startswith(f"{layer.name}.weight") and initializers[n].dtype == np.int8
                   and initializers[n].size == layer.weight_q.numel]
        np.testing.assert_array_equal(initializers[name].reshape(-1), layer.weight_q.codes.reshape(-1).numpy())
    x, y = splits.evaluation.tensors
    with torch.no_grad():
        simulated = float((sim(x).argmax(1) == y).float().mean())
    (logits,) = deployment(splits.named(x)).values()
    assert abs(float((logits.argmax(1) == y).float().mean()) - simulated) <= 0.01


@pytest.mark.slow
def test_mobilenet_v2_w4a8_adaround_recovers_the_naive_loss_and_deploys(compose, reference_models, tmp_path) -> None:
    """The issue's acceptance: W4A8 per-tensor min/max loses >= 10 pt top-1 in simulation, AdaRound recovers
    >= 90 % of it, and the ONNX Runtime int8-grid cell agrees with its simulation within 1 pt (159 s on the
    2-vCPU Xeon at load ~7, mostly AdaRound)."""
    from qbench import config as qconfig
    from qbench.backends import get_backend
    from qbench.backends.deployment import DeployContext
    from qbench.data import load_splits
    from qbench.quant import apply_scheme

    fp32 = reference_models["mobilenet_v2"]
    cfg = qconfig.validate(compose("model=mobilenet_v2", "quant=w4a8_pt_adaround", "backend=onnxruntime"))
    splits = load_splits(cfg.dataset, cfg.model)
    x, y = splits.evaluation.tensors

    def top1(model: nn.Module) -> float:
        with torch.no_grad():
            return float((model(x).argmax(1) == y).float().mean()) * 100

    naive_cfg = qconfig.validate(compose("model=mobilenet_v2", "quant=w4a8_pt_minmax"))
    naive = top1(apply_scheme(fp32, naive_cfg.quant, splits)[0])
    sim, _ = apply_scheme(fp32, cfg.quant, splits)
    reference, adaround = top1(fp32), top1(sim)
    assert reference - naive >= 10
    assert (adaround - naive) / (reference - naive) >= 0.9, (reference, naive, adaround)
    deployment = get_backend("onnxruntime").deploy(DeployContext(cfg, fp32, splits, tmp_path, sim))
    (logits,) = deployment(splits.named(x)).values()
    assert abs(float((logits.argmax(1) == y).float().mean()) * 100 - adaround) <= 1.0
