"""Per-layer overrides of a scheme (``quant.layers``): an fnmatch pattern of layer names -> what changes there.

    quant.layers={"features.0.*": {bits: 8}, "classifier.*": {float: true}}

Keys of an override: ``bits`` (weight bits), ``granularity`` (weight granularity), ``activation_bits``, or
``float: true`` (the layer is kept float, like ``quant.exclude``). Patterns apply in the order given; a later
pattern's keys win for the layers both name. Torch-free: validation and the scheme label run on the orchestrating
side, which has no model, so the label counts *patterns*, not layers (``w4a8-pc+3x8b`` = three patterns at 8-bit
weights); that a pattern names a layer is checked in the worker, when the model is there.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Mapping
from typing import Any

from qbench.config.names import BIT_RANGE, GRANULARITIES

OVERRIDE_KEYS = ("bits", "granularity", "activation_bits", "float")


class LayerOverrideError(ValueError):
    """A malformed ``quant.layers`` entry (one line naming the valid keys or values)."""


def overrides(quant: Any) -> dict[str, dict[str, Any]]:
    """``quant.layers`` as plain dicts (empty when the scheme has none, e.g. a config saved before it existed)."""
    layers = getattr(quant, "layers", None) or {}
    return {str(p): dict(o or {}) for p, o in layers.items()}


def check_overrides(quant: Any) -> None:
    """Raise LayerOverrideError for an unknown key, a value out of range or an override the method cannot use."""
    for pattern, override in overrides(quant).items():
        key = f"quant.layers.{pattern}"
        unknown = [k for k in override if k not in OVERRIDE_KEYS]
        if unknown:
            raise LayerOverrideError(f"{key}: unknown key(s) {', '.join(map(str, unknown))}; valid keys: "
                                     f"{', '.join(OVERRIDE_KEYS)}")
        if not override:
            raise LayerOverrideError(f"{key}: empty override; valid keys: {', '.join(OVERRIDE_KEYS)}")
        if quant.method == "none":
            raise LayerOverrideError(f"{key}: quant.method=none quantizes no layer; per-layer overrides need a scheme")
        if "float" in override:
            if not isinstance(override["float"], bool):
                raise LayerOverrideError(f"{key}.float={override['float']}: must be true or false")
            if override["float"] and len(override) > 1:
                raise LayerOverrideError(f"{key}: float: true keeps the layer float; it takes no other key")
        for name in ("bits", "activation_bits"):
            if name in override and (not isinstance(override[name], int) or isinstance(override[name], bool)
                                     or override[name] not in BIT_RANGE):
                raise LayerOverrideError(f"{key}.{name}={override[name]}: must be an integer in 2..16")
        if "granularity" in override and override["granularity"] not in GRANULARITIES:
            raise LayerOverrideError(f"{key}.granularity={override['granularity']}: invalid value; valid values: "
                                     f"{', '.join(GRANULARITIES)}")
        if "activation_bits" in override and quant.method not in ("ptq", "qat", "dynamic"):
            raise LayerOverrideError(f"{key}.activation_bits: quant.method={quant.method} quantizes no activations")


def resolve(name: str, layer_overrides: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The merged override of layer ``name`` (patterns in order, later keys win); {} when none names it."""
    merged: dict[str, Any] = {}
    for pattern, override in layer_overrides.items():
        if fnmatch.fnmatch(name, pattern):
            merged.update(override)
    if merged.get("float") is False:
        del merged["float"]
    return merged


def _token(override: Mapping[str, Any]) -> str:
    """A short label of one override: ``fp``, ``8b`` (weights), ``a6`` (activations), ``w8a6``, ``8b-pt``."""
    if override.get("float"):
        return "fp"
    w, a = override.get("bits"), override.get("activation_bits")
    token = f"w{w}a{a}" if w and a else f"{w}b" if w else f"a{a}" if a else ""
    granularity = override.get("granularity")
    if granularity:
        token += {"per_tensor": "-pt", "per_channel": "-pc", "per_group": "-pg"}[granularity]
    return token


def label_suffix(quant: Any) -> str:
    """The scheme label's part for ``quant.layers``: ``+3x8b+2xfp`` (patterns counted per kind of override)."""
    counts = Counter(_token(o) for o in overrides(quant).values() if o and o != {"float": False})
    return "".join(f"+{n}x{token}" for token, n in sorted(counts.items()))


def changes_grid(quant: Any) -> list[str]:
    """Patterns whose override moves layers off the scheme's grid (other bits or granularity), as
    ``pattern (what)``; float overrides and ones that restate the scheme's own values are not listed."""
    w, a = quant.weights, quant.activations
    out = []
    for pattern, o in overrides(quant).items():
        if o.get("float"):
            continue
        moved = []
        if o.get("bits", w.bits) != w.bits:
            moved.append(f"{o['bits']}-bit weights")
        if o.get("activation_bits", a.bits) != a.bits:
            moved.append(f"{o['activation_bits']}-bit activations")
        if o.get("granularity", w.granularity) != w.granularity:
            moved.append(f"{o['granularity']} weights")
        if moved:
            out.append(f"{pattern} ({', '.join(moved)})")
    return out
