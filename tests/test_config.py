"""Config composition (as Hydra does it) and validation with one-line errors."""

from __future__ import annotations

import pytest

from qbench import config as qconfig


def test_defaults_compose_and_validate(compose) -> None:
    cfg = qconfig.validate(compose())
    assert (cfg.model.name, cfg.dataset.name, cfg.backend.name) == ("digits_cnn", "digits", "torch")
    assert cfg.quant.method == "ptq" and cfg.quant.weights.granularity == "per_channel"
    assert cfg.tracking.uri == "sqlite:///results/mlflow.db"


@pytest.mark.parametrize("preset", qconfig.group_options("quant"))
def test_every_quant_preset_is_valid(compose, preset: str) -> None:
    qconfig.validate(compose(f"quant={preset}"))


def test_public_keys_are_overridable(compose) -> None:
    cfg = qconfig.validate(compose(
        "quant.method=weight_only", "quant.weights.bits=3", "quant.weights.granularity=per_group",
        "quant.weights.group_size=16", "quant.weights.symmetric=false", "quant.weights.observer=histogram",
        "quant.activations.bits=6", "quant.activations.granularity=per_channel", "quant.activations.symmetric=true",
        "quant.activations.observer=percentile", "quant.calibration.samples=64", "tracking.uri=sqlite:///x.db",
        "tracking.experiment=exp",
    ))
    assert cfg.quant.weights.group_size == 16 and cfg.tracking.experiment == "exp"
    assert qconfig.scheme_label(cfg.quant) == "w3-wo-pg16-histogram"


@pytest.mark.parametrize(
    "override,fragment",
    [
        ("quant.weights.bits=1", "2..16"),
        ("quant.weights.bits=17", "2..16"),
        ("quant.activations.bits=0", "2..16"),
        ("quant.weights.granularity=per_row", "per_tensor, per_channel, per_group"),
        ("quant.activations.granularity=per_group", "per_tensor, per_channel"),
        ("quant.weights.observer=magic", "minmax, percentile, mse, histogram"),
        ("quant.method=gptq", "none, ptq, dynamic, weight_only, qat"),
        ("quant.calibration.samples=0", "> 0"),
        ("measure.latency.min_calls=0", "> 0"),
    ],
)
def test_bad_values_fail_with_valid_values(compose, override: str, fragment: str) -> None:
    with pytest.raises(qconfig.ConfigError) as info:
        qconfig.validate(compose(override))
    message = str(info.value)
    assert fragment in message and override.split("=")[0] in message and "\n" not in message


def test_group_size_must_be_positive_for_per_group(compose) -> None:
    with pytest.raises(qconfig.ConfigError, match="group_size"):
        qconfig.validate(compose("quant.weights.granularity=per_group", "quant.weights.group_size=0"))
    # irrelevant when not grouping
    qconfig.validate(compose("quant.weights.granularity=per_channel", "quant.weights.group_size=0"))


def test_wrong_type_and_unknown_key_fail_at_composition(compose) -> None:
    with pytest.raises(Exception, match="bits"):
        compose("quant.weights.bits=abc")
    with pytest.raises(Exception, match="foo"):
        compose("model.foo=1")


@pytest.mark.parametrize(
    "overrides,label",
    [
        (["quant=fp32"], "fp32"),
        (["quant=w8a8"], "w8a8"),
        (["quant=w8a8_pc"], "w8a8-pc"),
        (["quant=w4a8_pc"], "w4a8-pc-mse"),
        (["quant=w4_wo"], "w4-wo-pg32"),
        (["quant=dynamic8"], "dyn-w8a8-pc"),
        (["quant=w8a8", "quant.weights.bits=4"], "w4a8"),
    ],
)
def test_scheme_labels_follow_values(compose, overrides: list[str], label: str) -> None:
    assert qconfig.scheme_label(compose(*overrides).quant) == label


def test_cell_hash_ignores_tracking_but_not_scheme(compose) -> None:
    base = qconfig.cell_hash(compose())
    assert qconfig.cell_hash(compose("tracking.experiment=other", "results_dir=elsewhere")) == base
    assert qconfig.cell_hash(compose("quant.weights.bits=4")) != base
    assert qconfig.cell_hash(compose("backend.device=cuda")) != base


def test_each_backend_has_its_own_settings(compose) -> None:
    """ORT's session options are in onnxruntime cells only (hash and params), torch_int8's engine in its own."""
    torch_cell = qconfig.validate(compose("backend=torch"))
    ort_cell = qconfig.validate(compose("backend=onnxruntime", "backend.graph_optimization_level=basic"))
    int8_cell = qconfig.validate(compose("backend=torch_int8", "backend.quantized_engine=fbgemm"))
    assert set(vars(torch_cell.backend)) == {"name", "device"}
    assert ort_cell.backend.graph_optimization_level == "basic" and not hasattr(ort_cell.backend, "quantized_engine")
    assert int8_cell.backend.quantized_engine == "fbgemm" and not hasattr(int8_cell.backend, "providers")
    with pytest.raises(qconfig.ConfigError, match="valid values: disable, basic, extended, all"):
        qconfig.validate(compose("backend=onnxruntime", "backend.graph_optimization_level=max"))


def test_a_setting_of_another_backend_is_one_clear_line() -> None:
    from qbench.cli import UsageError, preflight

    with pytest.raises(UsageError) as info:
        preflight(["backend=torch", "backend.graph_optimization_level=basic"])
    assert str(info.value) == ("backend.graph_optimization_level is a setting of backend=onnxruntime, not of "
                               "backend=torch (its settings: name, device)")
    with pytest.raises(UsageError, match="backend=torch_int8/onnxruntime/openvino, not of backend=torch"):
        preflight(["backend.int8_path=u8s8"])
