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
    from qbench.quant.simulate import build_simulated_model, calibrate, quantized_layers

    if quant.method == "none":
        return None, {}
    model = build_simulated_model(fp32_model, quant, emulate_isa, layer_types)
    samples = min(quant.calibration.samples, len(splits.calibration))
    stats: dict[str, float] = {}
    if quant.algorithm != "rtn":
        model, stats = _cached_algorithm(model, quant, splits, samples, cache_key, emulate_isa)
    # AdaRound / QDrop calibrate before they reconstruct and keep those ranges (what was optimised is what runs)
    if quant.method in ("ptq", "qat") and not _calibrated(model):
        calibrate(model, splits.calibration_inputs(samples, quant.calibration.batch_size))
    if quant.method == "qat":
        from qbench.quant.qat import cached_qat

        model, qat_stats = cached_qat(model, splits, quant, cache_key)
        for layer in quantized_layers(model):
            layer.emulate_isa = emulate_isa
        return model, {**stats, **qat_stats}
    return model, stats


def _calibrated(model: nn.Module) -> bool:
    from qbench.quant.simulate import quantized_layers

    static = [layer.input_quantizer for layer in quantized_layers(model)
              if layer.input_quantizer is not None and not layer.input_quantizer.dynamic]
    return bool(static) and all(q.calibrated for q in static)


def _cached_algorithm(model: nn.Module, quant: QuantConfig, splits: DataSplits, samples: int,
                      cache_key: str | None, emulate_isa: str | None) -> tuple[nn.Module, dict[str, float]]:
    """The algorithm (GPTQ, AWQ, SmoothQuant, CLE, AdaRound, QDrop) on ``model``, once per (model, calibration
    data, scheme, quantized layers, emulated ISA) when the model has a ``cache_key``: the cells that deploy one
    scheme to several backends compute it once (GPTQ on SmolLM2: ~60 s). A static scheme's activation ranges are
    calibrated inside, so they are cached with it (SmolLM2 after SmoothQuant: ~15 s of calibration a cell). Its cost
    figures stay the computing run's; ``quant.algorithm_cached`` says whether it was loaded."""
    import hashlib
    import json
    from dataclasses import asdict

    import torch

    from qbench.config import paths
    from qbench.quant.algorithms import apply_algorithm
    from qbench.quant.simulate import SIMULATION_VERSION, calibrate, quantized_layers
    from qbench.storage import cached, evict_least_recent, file_lock, touch, write_atomic

    def was_calibrated(module: nn.Module) -> bool:
        """Whether a static scheme's activation ranges were already calibrated; if not, calibrates them now as
        apply_scheme would, right after the algorithm."""
        if quant.method not in ("ptq", "qat") or _calibrated(module):
            return True
        calibrate(module, splits.calibration_inputs(samples, quant.calibration.batch_size))
        return False

    def build() -> dict[str, object]:
        batches = [(b,) if isinstance(b, torch.Tensor) else tuple(b)
                   for b in splits.calibration_inputs(samples, quant.calibration.batch_size)]
        stats = apply_algorithm(model, quant.algorithm, quant.algorithm_options, batches)
        was_calibrated(model)
        return {"model": model, "stats": stats}

    if cache_key is None:
        blob = build()
        return blob["model"], dict(blob["stats"])  # type: ignore[call-overload]
    scheme = {k: v for k, v in asdict(quant).items() if k != "target_isa"}
    # the layers actually quantized (not the backend's layer types: a transformer has only Linear layers, so its
    # torch and torch_int8 cells share one result)
    layers = [layer.name for layer in quantized_layers(model)]
    # the emulated ISA shapes what the algorithm optimises and the calibrated ranges (absent when exact, which
    # keeps the keys of earlier entries)
    blob_key = json.dumps({"scheme": scheme, "layers": layers, "samples": samples,
                           **({"emulate_isa": emulate_isa} if emulate_isa else {})}, sort_keys=True)
    digest = hashlib.sha256(blob_key.encode()).hexdigest()[:12]
    path = paths.cache_dir() / "algorithms" / f"{cache_key}-{quant.algorithm}-{digest}-s{SIMULATION_VERSION}.pt"
    # qbench's own cache file (a pickled simulated module), not user input
    blob, hit = cached(path, build, torch.save, lambda p: torch.load(p, weights_only=False))
    if hit and not was_calibrated(blob["model"]):  # an entry cached before its calibration was: kept calibrated now
        with file_lock(path.with_suffix("")):
            write_atomic(path, lambda tmp: torch.save(blob, tmp))
    elif hit:
        touch(path)
    else:  # a SmolLM2 entry is ~1.2 GB: keep the folder within its budget, least recently used first
        evict_least_recent(path.parent, algorithm_cache_bytes(), "*.pt", keep=path)
    return blob["model"], {**blob["stats"], "quant.algorithm_cached": float(hit)}  # type: ignore[arg-type, dict-item]


def algorithm_cache_bytes() -> int:
    """The algorithm cache's size budget: ``QBENCH_ALGORITHM_CACHE_GB`` (default 8 GB, a handful of LLM entries)."""
    import os

    return int(float(os.environ.get("QBENCH_ALGORITHM_CACHE_GB", "8")) * 2**30)

