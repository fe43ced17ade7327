"""The latency stage of ``qbench tune --objective latency``: the fastest configuration within the budget, not the
first that meets it.

The accuracy search (:mod:`qbench.orchestrate.tune_search`) stops at the fewest layers moved off the base scheme,
which is the fastest feasible prefix only if every layer is faster quantized than float. On real kernels that is
not so: on ONNX Runtime here, resnet18's last-stage 3x3 convolutions (512 channels, 1x1-2x2 outputs at 32x32
inputs) take ~115 µs per call in QLinearConv against ~41 µs in the float Conv, and the W8A8 model is no faster than
FP32 overall (paired 0.96-0.99x) while the same model with those three layers float is (1.10-1.21x).

So when the cells carry a per-layer profile (``measure.layer_profile``, from the runtime's own profiler:
``layer_times.json``), the stage compares each quantized layer's kernel time in the best feasible candidate with the
same layer's in the FP32 reference, keeps the layers whose int8 kernel is slower by more than ``MIN_SHARE`` of the
candidate's summed layer time (below that, the quantize/dequantize and layout changes that keeping one layer float
adds cost about as much as the layer saves: ~5-15 µs per transition on this CPU), and measures the candidate with
the slowest ``m`` of them kept float for ``m`` = all, then half: at most two more measured candidates. Every one is a
real cell; the final choice is the measured speed-up (paired with FP32), not the profile's prediction.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

# a layer must save more than this share of the candidate's summed layer time to be worth a float island
MIN_SHARE = 0.02
PROFILE_FILE = "layer_times.json"


def layer_times(record: dict[str, Any]) -> dict[str, float] | None:
    """The per-layer kernel times (µs per call) a cell recorded, or None (no profile)."""
    for artifact in record.get("artifacts") or []:
        path = Path(artifact)
        if path.name == PROFILE_FILE and path.is_file():
            return {k: float(v) for k, v in json.loads(path.read_text())["layers"].items()}
    return None


def slow_layers(quantized: dict[str, float], fp32: dict[str, float], skip: set[str] | frozenset[str] = frozenset(),
                min_share: float = MIN_SHARE) -> list[tuple[str, float]]:
    """(layer, µs saved per call if kept float), slowest-in-int8 first: the layers of ``quantized`` (a candidate's
    profile) that take more than ``min_share`` of its summed layer time longer than in ``fp32``; ``skip``: layers
    already float in the candidate."""
    total = sum(quantized.values())
    excess = [(name, t - fp32[name]) for name, t in quantized.items() if name in fp32 and name not in skip]
    return sorted(((n, e) for n, e in excess if e > min_share * total), key=lambda x: (-x[1], x[0]))


def float_counts(slow: int) -> list[int]:
    """How many of the slow layers the stage keeps float, in the order measured: all, then half (rounded up)."""
    if slow == 0:
        return []
    half = math.ceil(slow / 2)
    return [slow] if half == slow else [slow, half]
