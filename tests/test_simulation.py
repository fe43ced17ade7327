"""Simulated quantization of the reference models: accuracy, what the integer kernel would see, BN folding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from qbench import config as qconfig
from qbench.data import load_splits
from qbench.quant import apply_scheme
from qbench.quant.simulate import QuantizedLayer, fold_batchnorm, quantized_layers


def _top1(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.inference_mode():
        return float((model(x).argmax(1) == y).float().mean())


@pytest.mark.parametrize("name", ["digits_cnn", "resnet18", "mobilenet_v2"])
def test_w8a8_per_channel_within_one_point_of_fp32(compose, reference_models, name: str) -> None:
    cfg = qconfig.validate(compose(f"model={name}", "quant=w8a8_pc"))
    splits = load_splits(cfg.dataset, cfg.model)
    x, y = splits.evaluation.tensors
    fp32 = _top1(reference_models[name], x, y)
    sim, _ = apply_scheme(reference_models[name], cfg.quant, splits)
    assert sim is not None
    quantized = _top1(sim, x, y)
    assert abs(quantized - fp32) <= 0.01, f"{name}: fp32 {fp32:.4f} w8a8-pc {quantized:.4f}"


def test_batchnorm_is_folded_exactly(reference_models) -> None:
    model = reference_models["resnet18"]
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(4, 3, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(model(x), folded(x), atol=1e-4)


def test_simulated_weights_are_integer_codes_times_scale(compose, reference_models) -> None:
    cfg = qconfig.validate(compose("model=digits_cnn", "quant=w4a8_pc"))
    sim, _ = apply_scheme(reference_models["digits_cnn"], cfg.quant, load_splits(cfg.dataset, cfg.model))
    layers = quantized_layers(sim)
    assert len(layers) == 4  # 3 convs + classifier
    for layer in layers:
        q = layer.weight_q
        assert q is not None and q.codes.dtype == torch.int8 and q.bits == 4
        assert int(q.codes.min()) >= -7 and int(q.codes.max()) <= 7
        assert q.scale.shape == (layer.layer.weight.shape[0],)
        # the weight the layer computes with is exactly codes x scale
        expected = q.codes.float() * q.scale.reshape(-1, *([1] * (q.codes.dim() - 1)))
        assert torch.equal(layer.weight(), expected)
        assert layer.input_quantizer is not None and layer.input_quantizer.calibrated


def test_weight_only_leaves_activations_in_float(compose, reference_models) -> None:
    cfg = qconfig.validate(compose("model=digits_cnn", "quant=w4_wo"))
    sim, _ = apply_scheme(reference_models["digits_cnn"], cfg.quant, load_splits(cfg.dataset, cfg.model))
    layers = quantized_layers(sim)
    assert all(layer.input_quantizer is None for layer in layers)
    assert all(layer.weight_q.granularity == "per_group" for layer in layers)


def test_dynamic_quantizes_activations_per_batch(compose, reference_models) -> None:
    cfg = qconfig.validate(compose("model=digits_cnn", "quant=dynamic8"))
    sim, _ = apply_scheme(reference_models["digits_cnn"], cfg.quant, load_splits(cfg.dataset, cfg.model))
    first = quantized_layers(sim)[0]
    assert first.input_quantizer is not None and first.input_quantizer.dynamic
    x = torch.randn(2, 1, 32, 32)
    # the first layer's input is quantized with the batch's own range: 256 levels at most
    seen = []
    first.register_forward_hook(lambda m, i, o: seen.append(m.input_quantizer(i[0])))
    with torch.inference_mode():
        sim(x)
    assert seen[0].unique().numel() <= 256


@pytest.mark.parametrize("observer", ["minmax", "percentile", "mse", "histogram"])
def test_activation_observers_calibrate(compose, reference_models, observer: str) -> None:
    cfg = qconfig.validate(compose("model=digits_cnn", "quant=w8a8_pc", f"quant.activations.observer={observer}",
                                   "quant.calibration.samples=64"))
    splits = load_splits(cfg.dataset, cfg.model)
    sim, _ = apply_scheme(reference_models["digits_cnn"], cfg.quant, splits)
    x, y = splits.evaluation.tensors
    assert _top1(sim, x, y) >= 0.95
    for layer in quantized_layers(sim):
        assert isinstance(layer, QuantizedLayer) and float(layer.input_quantizer.scale.min()) > 0


def test_excluded_layers_stay_float(compose, reference_models) -> None:
    cfg = qconfig.validate(compose("model=resnet18", "quant=w8a8", "quant.exclude=[conv1,fc]"))
    sim, _ = apply_scheme(reference_models["resnet18"], cfg.quant, load_splits(cfg.dataset, cfg.model))
    names = {layer.name for layer in quantized_layers(sim)}
    assert "conv1" not in names and "fc" not in names and "layer1.0.conv1" in names


def test_cached_qat_models_are_keyed_by_the_qat_code_version(compose, tmp_path, monkeypatch) -> None:
    """Like reference models: a QAT model trained by older QAT code is not reused after the code changes."""
    from qbench.quant import qat

    monkeypatch.setenv("QBENCH_CACHE", str(tmp_path / "cache"))
    trained: list[int] = []

    def fake_training(model: nn.Module, splits: object, quant: object, seed: int = 0) -> dict[str, float]:
        trained.append(1)
        return {"qat.train_time_s": 0.0}

    monkeypatch.setattr(qat, "quantization_aware_training", fake_training)
    quant = qconfig.validate(compose("quant=qat_w8a8_pc")).quant
    model = nn.Linear(4, 2)
    assert qat.cached_qat(model, None, quant, "ref-key")[1]["qat.cached"] == 0.0
    assert qat.cached_qat(model, None, quant, "ref-key")[1]["qat.cached"] == 1.0
    monkeypatch.setattr(qat, "QAT_CODE_VERSION", qat.QAT_CODE_VERSION + 1)
    assert qat.cached_qat(model, None, quant, "ref-key")[1]["qat.cached"] == 0.0
    assert len(trained) == 2


def test_layer_names_kept_float_and_excluded() -> None:
    """model.keep_float names a layer by its last parts (the wrapper's prefix is the model's business);
    a keep_float or quant.exclude pattern that names no layer is an error, not a silently quantized layer."""
    from qbench.config import QuantConfig, TensorQuantConfig
    from qbench.quant.simulate import build_simulated_model, layers_named

    model = nn.Module()
    model.lm = nn.Sequential()
    model.lm.add_module("body", nn.Linear(8, 8))
    model.lm.add_module("lm_head", nn.Linear(8, 4))
    assert layers_named(model, ["lm_head"]) == ["lm.lm_head"]
    with pytest.raises(ValueError, match="'head' names no layer"):
        layers_named(model, ["head"])
    quant = QuantConfig(method="weight_only", weights=TensorQuantConfig(bits=4), exclude=["lm.lm_head"])
    assert [layer.name for layer in quantized_layers(build_simulated_model(model, quant))] == ["lm.body"]
    with pytest.raises(ValueError, match=r"quant.exclude \['lm_head'\] match"):
        build_simulated_model(model, QuantConfig(method="weight_only", exclude=["lm_head"]))
