"""Quantization schemes applied in simulation: PTQ (static), dynamic, weight-only, QAT."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

    from qbench.config import QuantConfig
    from qbench.data import DataSplits


def apply_scheme(fp32_model: nn.Module, quant: QuantConfig, splits: DataSplits, cache_key: str | None = None,
                 emulate_isa: str | None = None, layer_types: tuple[str, ...] = ("Conv2d", "Linear")
                 ) -> tuple[nn.Module | None, dict[str, float]]:
    """The simulated (fake-quant) model of ``quant``: BN folded, weights quantized, static activation
    ranges calibrated on ``quant.calibration.samples`` calibration images, then fine-tuned for QAT.
    None for method ``none``. Also returns figures of the process (QAT time and accuracy).

    A QAT result is cached under ``cache_key`` (reference model + scheme) so that the cells of a suite that
    deploy the same QAT model to several backends train it once."""
    import torch

    from qbench.quant.simulate import build_simulated_model, calibrate, quantized_layers

    if quant.method == "none":
        return None, {}
    model = build_simulated_model(fp32_model, quant, emulate_isa, layer_types)
    samples = min(quant.calibration.samples, len(splits.calibration))
    stats: dict[str, float] = {}
    if quant.algorithm != "rtn":
        from qbench.quant.algorithms import apply_algorithm

        batches = [(b,) if isinstance(b, torch.Tensor) else tuple(b)
                   for b in splits.calibration_inputs(samples, quant.calibration.batch_size)]
        stats = apply_algorithm(model, quant.algorithm, quant.algorithm_options, batches)
    if quant.method in ("ptq", "qat"):
        calibrate(model, splits.calibration_inputs(samples, quant.calibration.batch_size))
    if quant.method == "qat":
        from qbench.quant.qat import cached_qat

        model, qat_stats = cached_qat(model, splits, quant, cache_key)
        for layer in quantized_layers(model):
            layer.emulate_isa = emulate_isa
        return model, {**stats, **qat_stats}
    return model, stats
