"""Quantization-aware training: fine-tune the simulated model with fake quantization in the loop.

Rounding passes gradients straight through (STE); values clipped by the range get none. With
``quant.qat.learnable_scales`` the weight and activation scales are trained too (LSQ, with its gradient
scaling). BatchNorm is folded before training (the folded conv is trained), so what is trained is exactly
what integer runtimes deploy. Static activation ranges are calibrated first and then kept (or learned).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import torch

from qbench.config import TrainRecipe, paths
from qbench.quant.simulate import SIMULATION_VERSION, quantized_layers
from qbench.storage import cached
from qbench.zoo.training import train

# Bump when QAT code changes what it trains (invalidates cached QAT models), like the reference models'
# qbench.zoo.cache.TRAINING_CODE_VERSION (which the reference key of a QAT model already covers).
QAT_CODE_VERSION = 1

if TYPE_CHECKING:
    from torch import nn

    from qbench.config import QuantConfig
    from qbench.data import DataSplits


def quantization_aware_training(model: nn.Module, splits: DataSplits, quant: QuantConfig, seed: int = 0
                                ) -> dict[str, float]:
    """Fine-tune ``model`` (a calibrated simulated model) in place; returns timing and accuracy figures."""
    layers = quantized_layers(model)
    for layer in layers:
        layer.enable_qat(quant.qat.learnable_scales)
    recipe = TrainRecipe(epochs=quant.qat.epochs, batch_size=quant.qat.batch_size, optimizer="sgd", lr=quant.qat.lr,
                         weight_decay=0.0, label_smoothing=0.1, warmup_epochs=0, augment=True, seed=seed)
    stats = train(model, splits, recipe, description="QAT", show_progress=False) if recipe.epochs > 0 else {}
    for layer in layers:
        layer.finish_qat()
    model.eval()
    return {f"qat.{k}": float(v) for k, v in stats.items()}


def cached_qat(model: nn.Module, splits: DataSplits, quant: QuantConfig, reference_key: str | None
               ) -> tuple[nn.Module, dict[str, float]]:
    """QAT of ``model`` once per (reference model, scheme): later cells load the trained simulated model."""
    if reference_key is None:
        return model, quantization_aware_training(model, splits, quant)
    # training runs with exact integer arithmetic: the emulated target ISA does not change what is trained
    trained_scheme = {k: v for k, v in asdict(quant).items() if k != "target_isa"}
    scheme = hashlib.sha256(json.dumps(trained_scheme, sort_keys=True).encode()).hexdigest()[:12]
    path = paths.cache_dir() / "qat" / f"{reference_key}-{scheme}-v{QAT_CODE_VERSION}-s{SIMULATION_VERSION}.pt"

    def build() -> dict[str, Any]:
        return {"model": model, "stats": quantization_aware_training(model, splits, quant)}

    # qbench's own cache file (a pickled module with its QuantizedTensors), not user input
    blob, hit = cached(path, build, torch.save, lambda p: torch.load(p, weights_only=False))
    return blob["model"], {**blob["stats"], "qat.cached": float(hit)}
