"""NNCF's algorithms on the OpenVINO model, fed with qbench's calibration split: ``quantize`` (static W8A8 with
NNCF's own calibration) and ``compress_weights`` (weight-only int8/int4 on MatMul/Gemm). The observer mapping is
in :mod:`qbench.backends.openvino`'s docstring."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import openvino as ov

    from qbench.backends.deployment import DeployContext


def _calibration_items(ctx: DeployContext, model: ov.Model) -> list[dict[str, Any]]:
    """``quant.calibration.samples`` samples of the calibration split, one per item (the model's fixed batch
    when it has one), keyed by the model's input names in the contract's order."""
    from qbench.backends.onnxruntime.quantize import feed_names
    from qbench.data.batching import tensors_of

    names = feed_names(ctx, [i.any_name for i in model.inputs])
    samples = min(ctx.cfg.quant.calibration.samples, len(ctx.splits.calibration))
    return [{n: t.numpy() for n, t in zip(names, tensors_of(batch), strict=True)}
            for batch in ctx.splits.calibration_inputs(samples, 1)]


def _quiet() -> Any:
    import nncf

    nncf.set_log_level(logging.ERROR)
    return nncf


def quantize(ctx: DeployContext, model: ov.Model, tags: dict[str, str]) -> ov.Model:
    """Static W8A8 by NNCF's ``quantize`` for the CPU target."""
    nncf = _quiet()
    from nncf.quantization.advanced_parameters import QuantizationParameters
    from nncf.quantization.range_estimator import (
        AggregatorType,
        RangeEstimatorParameters,
        RangeEstimatorParametersSet,
        StatisticsCollectorParameters,
        StatisticsType,
    )

    w, a = ctx.cfg.quant.weights, ctx.cfg.quant.activations
    if a.observer == "percentile":
        tail = StatisticsCollectorParameters(StatisticsType.QUANTILE, AggregatorType.MEAN,
                                             quantile_outlier_prob=1 - a.percentile / 100)
        ranges = RangeEstimatorParameters(min=tail, max=tail)
    else:
        ranges = {"minmax": RangeEstimatorParametersSet.MINMAX, "histogram": RangeEstimatorParametersSet.HISTOGRAM}[
            a.observer]
    overflow = nncf.OverflowFix.ENABLE if ctx.int8_path == "u8s8_reduce_range" else nncf.OverflowFix.DISABLE
    advanced = nncf.AdvancedQuantizationParameters(
        overflow_fix=overflow, activations_range_estimator_params=ranges,
        weights_quantization_params=QuantizationParameters(per_channel=w.granularity == "per_channel"))
    preset = nncf.QuantizationPreset.PERFORMANCE if a.symmetric else nncf.QuantizationPreset.MIXED
    items = _calibration_items(ctx, model)
    tags.update({"openvino.quantization": f"nncf {nncf.__version__} quantize", "nncf.preset": preset.value,
                 "nncf.overflow_fix": overflow.value, "nncf.calibration_samples": str(len(items)),
                 "nncf.activation_range": a.observer, "nncf.fast_bias_correction": "true"})
    return nncf.quantize(model, nncf.Dataset(items), preset=preset, target_device=nncf.TargetDevice.CPU,
                         subset_size=len(items), advanced_parameters=advanced)


def compress_weights(ctx: DeployContext, model: ov.Model, tags: dict[str, str]) -> ov.Model:
    """Weight-only int8 (per channel) or int4 (per group / per channel) of every MatMul/Gemm; convolutions are
    ignored (the simulation quantizes Linear layers only). A model without one is an error, one line."""
    nncf = _quiet()

    w = ctx.cfg.quant.weights
    sym = "SYM" if w.symmetric else "ASYM"
    mode = getattr(nncf.CompressWeightsMode, f"INT{w.bits}_{sym}")
    linear = [op for op in model.get_ops() if op.get_type_name() == "MatMul"]
    if not linear:
        raise RuntimeError("weight-only on openvino compresses MatMul/Gemm layers, and this model has none")
    group = -1 if w.granularity == "per_channel" else w.group_size
    ignored = nncf.IgnoredScope(types=["Convolution", "GroupConvolution", "ConvolutionBackpropData"], validate=False)
    tags.update({"openvino.quantization": f"nncf {nncf.__version__} compress_weights", "nncf.mode": mode.value,
                 "nncf.group_size": str(group)})
    kwargs: dict[str, Any] = {"mode": mode, "ignored_scope": ignored}
    if w.bits == 4:  # every MatMul in int4 (NNCF's defaults keep the last one and a ratio of others in int8)
        kwargs.update(ratio=1.0, group_size=group, all_layers=True)
    return nncf.compress_weights(model, **kwargs)
