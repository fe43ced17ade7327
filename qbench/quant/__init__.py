"""Quantization schemes applied in simulation: PTQ (static), dynamic, weight-only, QAT."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

    from qbench.config import QuantConfig
    from qbench.data import DataSplits


def apply_scheme(fp32_model: nn.Module, quant: QuantConfig, splits: DataSplits) -> nn.Module | None:
    """The simulated (fake-quant) model of ``quant``: BN folded, weights quantized, static activation
    ranges calibrated on ``quant.calibration.samples`` calibration images. None for method ``none``."""
    from qbench.quant.simulate import build_simulated_model, calibrate

    if quant.method == "none":
        return None
    if quant.method == "qat":
        raise NotImplementedError("quant.method=qat is not available yet")
    model = build_simulated_model(fp32_model, quant)
    if quant.method == "ptq":
        samples = min(quant.calibration.samples, len(splits.calibration))
        calibrate(model, splits.calibration_inputs(samples, quant.calibration.batch_size))
    return model
