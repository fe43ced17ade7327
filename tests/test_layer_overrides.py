"""Per-layer overrides ``quant.layers``: validation, scheme label and hash, the simulation, real backends."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from qbench import config as qconfig

OVERRIDES = "+quant.layers={features.0: {bits: 8}, features.3: {bits: 8}, classifier: {float: true}}"


def test_label_counts_patterns_and_default_keeps_the_hash(compose) -> None:
    node = compose("quant=w4a8_pc", OVERRIDES)
    cfg = qconfig.validate(node)
    assert cfg.quant.layers == {"features.0": {"bits": 8}, "features.3": {"bits": 8}, "classifier": {"float": True}}
    assert qconfig.scheme_label(cfg.quant) == "w4a8-pc-mse+2x8b+1xfp"
    assert qconfig.cell_name(cfg) == "digits_cnn/w4a8-pc-mse+2x8b+1xfp/torch"
    plain = qconfig.cell_config_dict(compose("quant=w4a8_pc"))
    assert plain["quant"]["layers"] == {}
    without_key = json.loads(json.dumps(plain))
    del without_key["quant"]["layers"]
    # a key added later is left out of the hash at its default: cells recorded before it keep their hash
    assert qconfig.cell_hash(plain) == qconfig.cell_hash(without_key)
    assert qconfig.cell_hash(plain) != qconfig.cell_hash(qconfig.cell_config_dict(node))
    label = qconfig.scheme_label(qconfig.validate(compose(
        "quant=w8a8_pc", "+quant.layers={conv*: {activation_bits: 6}, fc: {bits: 4, activation_bits: 4}}")).quant)
    assert label == "w8a8-pc+1xa6+1xw4a4"


@pytest.mark.parametrize(("override", "message"), [
    ("{fc: {bit: 8}}", "quant.layers.fc: unknown key(s) bit; valid keys: bits, granularity, activation_bits, float"),
    ("{fc: {bits: 1}}", "quant.layers.fc.bits=1: must be an integer in 2..16"),
    ("{fc: {float: true, bits: 8}}", "float: true keeps the layer float; it takes no other key"),
    ("{fc: {granularity: per_row}}", "granularity=per_row: invalid value; valid values: per_tensor, per_channel"),
    ("{fc: {}}", "quant.layers.fc: empty override"),
    ("{fc: {float: yes}}", "quant.layers.fc.float=yes: must be true or false"),
])
def test_invalid_overrides_are_one_line_errors(compose, override: str, message: str) -> None:
    with pytest.raises(qconfig.ConfigError, match=re.escape(message)):
        qconfig.validate(compose("quant=w4a8_pc", f"+quant.layers={override}"))


def test_overrides_the_method_cannot_use(compose) -> None:
    with pytest.raises(qconfig.ConfigError, match=r"quant\.method=none quantizes no layer"):
        qconfig.validate(compose("quant=fp32", "+quant.layers={fc: {float: true}}"))
    with pytest.raises(qconfig.ConfigError, match=r"quant\.method=weight_only quantizes no activations"):
        qconfig.validate(compose("quant=w4_wo", "+quant.layers={fc: {activation_bits: 8}}"))


def test_cli_reports_a_bad_override_in_one_line(run_qbench) -> None:
    out = run_qbench("run", "+quant.layers={fc: {bitz: 8}}")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "qbench: quant.layers.fc: unknown key(s) bitz; valid keys: bits, granularity, activation_bits, float"]


def test_setting_overrides_without_plus_says_how(run_qbench) -> None:
    out = run_qbench("run", "quant.layers={fc: {float: true}}")
    assert out.returncode == 2
    assert out.stderr.strip() == ("qbench: quant.layers: entries of quant.layers are new keys, added with '+': "
                                  "+quant.layers={fc: {float: true}}")


def test_simulation_honours_bits_and_float(compose, reference_models) -> None:
    from qbench.data import load_splits
    from qbench.quant import apply_scheme
    from qbench.quant.simulate import quantized_layers

    cfg = qconfig.validate(compose("quant=w4a8_pc", "+quant.layers={features.0: {bits: 8, activation_bits: 6}, "
                                   "features.3: {granularity: per_tensor}, classifier: {float: true}}"))
    splits = load_splits(cfg.dataset, cfg.model)
    sim, _ = apply_scheme(reference_models["digits_cnn"], cfg.quant, splits)
    layers = {layer.name: layer for layer in quantized_layers(sim)}
    assert set(layers) == {"features.0", "features.3", "features.6"}  # classifier kept float
    first, third = layers["features.0"], layers["features.6"]
    assert first.weight_spec.bits == 8 and int(first.weight_q.codes.abs().max()) > 7  # an 8-bit grid
    assert first.input_quantizer.spec.bits == 6 and first.input_quantizer.qmax - first.input_quantizer.qmin < 64
    assert third.weight_spec.bits == 4 and int(third.weight_q.codes.abs().max()) <= 7
    assert layers["features.3"].weight_q.granularity == "per_tensor"
    assert third.weight_q.granularity == "per_channel" and third.input_quantizer.spec.bits == 8
    assert cfg.quant.weights.bits == 4  # the scheme itself is untouched


def test_a_pattern_naming_no_layer_fails_at_cell_time(reference_models) -> None:
    from qbench.config import QuantConfig
    from qbench.quant.simulate import build_simulated_model

    quant = QuantConfig(method="weight_only", layers={"fc*": {"float": True}})
    with pytest.raises(ValueError, match=r"quant.layers \['fc\*'\] name\(s\) no Conv2d/Linear layer.*features.0"):
        build_simulated_model(reference_models["digits_cnn"], quant)


@pytest.mark.parametrize("backend", ["onnxruntime", "torch_int8"])
def test_real_backends_skip_other_grids_and_take_float_fallback(compose, backend: str) -> None:
    from qbench.orchestrate.preflight import unsupported_reason

    def reason(*extra: str) -> str | None:
        return unsupported_reason(qconfig.validate(compose("quant=w8a8_pc", f"backend={backend}", *extra)))

    assert reason("+quant.layers={classifier: {float: true}}") is None
    assert reason("+quant.layers={classifier: {bits: 8, activation_bits: 8}}") is None  # the same grid
    text = reason("+quant.layers={features.0: {bits: 4}}")
    assert text is not None and text.startswith("quant.layers features.0 (4-bit weights)")
    assert "layers can only be kept float" in text


def test_onnxruntime_cell_keeps_a_float_layer_float(run_qbench, tmp_path: Path) -> None:
    import onnx

    out = run_qbench("run", "quant=w8a8_pc", "backend=onnxruntime", "measure=quick", "tracking=none",
                     "+quant.layers={classifier: {float: true}}")
    assert out.returncode == 0, out.stderr[-2000:]
    (record_path,) = tmp_path.glob("results/runs/*/record.json")
    record = json.loads(record_path.read_text())
    assert record["status"] == "finished" and record["cell"] == "digits_cnn/w8a8-pc+1xfp/onnxruntime"
    assert record["tags"]["ort.float_nodes"] == "1"
    graph = onnx.load(str(record_path.parent / "model_int8.onnx")).graph
    quantized_weights = {n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    assert not any(name.startswith("classifier.weight") for name in quantized_weights)
    assert any(name.startswith("features.0.weight") for name in quantized_weights)
    assert record["metrics"]["acc.top1"] >= 0.95


def test_op_count_precision_follows_the_overrides(compose) -> None:
    from qbench.measure.energy import LayerPrecision, scheme_precision

    quant = qconfig.validate(compose("quant=w4a8_pc", "+quant.layers={features.*: {bits: 8}, "
                                     "features.6: {activation_bits: 4}}")).quant
    assert scheme_precision(quant, ["features.0", "features.6", "classifier"]) == {
        "features.0": LayerPrecision(8, 8, True), "features.6": LayerPrecision(8, 4, True),
        "classifier": LayerPrecision(4, 8, True)}


def test_torch_int8_keeps_a_float_layer_float(compose, reference_models, tmp_path: Path) -> None:
    from torch import nn

    from qbench.backends import get_backend
    from qbench.backends.deployment import DeployContext
    from qbench.data import load_splits
    from qbench.quant import apply_scheme, int8_path

    cfg = qconfig.validate(compose("quant=w8a8_pc", "backend=torch_int8", "+quant.layers={classifier: {float: true}}"))
    splits = load_splits(cfg.dataset, cfg.model)
    deploy_cfg, emulate, tags = int8_path.for_cell(cfg)
    sim, _ = apply_scheme(reference_models["digits_cnn"], deploy_cfg.quant, splits, None, emulate)
    context = DeployContext(deploy_cfg, reference_models["digits_cnn"], splits, tmp_path, sim,
                            int8_path=tags.get("int8.path", "none"))
    modules = dict(get_backend("torch_int8").deploy(context).runtime.named_modules())
    assert type(modules["classifier"]) is nn.Linear  # no qconfig: float
    assert "quantized" in type(modules["features.0"]).__module__


def test_overrides_restating_the_scheme_follow_the_int8_path(compose) -> None:
    """On a reduced-range path (7-bit), an 8-bit override of a W8A8 scheme is the scheme's grid: 7-bit as well;
    float and other values are left as they are."""
    from qbench.quant import int8_path

    cfg = qconfig.validate(compose("quant=dynamic8", "backend=torch_int8", "+quant.layers={fc: {activation_bits: 8}, "
                                   "head: {float: true}}"))
    path = int8_path.resolve("torch_int8", cfg.quant, "auto")
    effective = int8_path.effective_quant(cfg.quant, path)
    assert effective.layers == {"fc": {"activation_bits": path.activation_bits}, "head": {"float": True}}
    assert cfg.quant.layers["fc"] == {"activation_bits": 8}  # a copy
