"""A model's input contract: its named inputs (one sample's shape, dtype, how fake data fills them) and
whether its batch dimension is free or fixed.

Torch models take one image tensor ``(C, H, W)`` named ``input``. An ONNX file declares its own: every
graph input that is not an initializer, in graph order. Dimension 0 of each input is the batch: symbolic
means free, a number means the model runs only batches of exactly that size (the same number for every
input). The other dimensions must be numbers in the file, or be given in the config: ``model.input_shape``
for the first input (an image), ``model.inputs`` for any input by name::

    model.inputs={signal:{shape:[16000],fill:uniform},state:{shape:[64],fill:zeros}}

Fill rules (``dataset=fake`` only): ``normal`` (standard normal), ``uniform`` ([0, 1)), ``zeros``, ``ones``,
``randint:LOW:HIGH`` (integers in [LOW, HIGH)); float inputs default to ``normal``, others to ``zeros``.
Kept free of heavy imports: config validation parses ``model.inputs`` with it; reading an ONNX file's inputs
is :mod:`qbench.data.onnx_inputs`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

FILL_RULES = ("normal", "uniform", "zeros", "ones", "randint:LOW:HIGH")
DTYPES = ("float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")
FLOAT_DTYPES = ("float32", "float16", "float64")
OVERRIDE_KEYS = ("shape", "dtype", "fill")
# the name qbench gives the single input of torch models (and of their ONNX exports)
TORCH_INPUT_NAME = "input"


class InputError(ValueError):
    """An input contract cannot be resolved (one line naming the key and what would fit)."""


@dataclass(frozen=True)
class InputSpec:
    """One named input: the shape of one sample (no batch dimension), its dtype and its fake-data fill."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    fill: str = "normal"

    def describe(self, batch: int | None) -> str:
        """``name:BxD1xD2:dtype`` with B the fixed batch, or N when it is free."""
        dims = "x".join(str(d) for d in (batch or "N", *self.shape))
        return f"{self.name}:{dims}:{self.dtype}"


@dataclass(frozen=True)
class InputContract:
    """Every input of a model in feeding order, and the batch size the model is fixed at (None = free)."""

    inputs: tuple[InputSpec, ...]
    fixed_batch: int | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.inputs)

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        """``(C, H, W)`` when the model takes one float image, else None (audio, tabular, several inputs)."""
        if len(self.inputs) != 1:
            return None
        spec = self.inputs[0]
        if len(spec.shape) != 3 or spec.dtype not in FLOAT_DTYPES:
            return None
        c, h, w = spec.shape
        return c, h, w

    def describe(self) -> str:
        """The contract as a tag value: ``x:1x3x48x320:float32``, ``signal:Nx16000:float32,state:Nx64:float32``."""
        return ",".join(spec.describe(self.fixed_batch) for spec in self.inputs)

    def fills(self) -> str:
        return ",".join(f"{spec.name}={spec.fill}" for spec in self.inputs)


def image_contract(shape: tuple[int, ...]) -> InputContract:
    """The contract of a torch image model: one float input ``(C, H, W)``, free batch."""
    return InputContract((InputSpec(TORCH_INPUT_NAME, tuple(int(d) for d in shape)),))


# -------------------------------------------------------------------------------------------- config
def parse_fill(rule: str, key: str) -> tuple[str, int, int]:
    """``(kind, low, high)`` of a fill rule; ``low``/``high`` only matter for ``randint``."""
    if rule in ("normal", "uniform", "zeros", "ones"):
        return rule, 0, 0
    parts = str(rule).split(":")
    if len(parts) == 3 and parts[0] == "randint":
        try:
            low, high = int(parts[1]), int(parts[2])
        except ValueError:
            low, high = 0, 0
        if low < high:
            return "randint", low, high
    raise InputError(f"{key}={rule}: invalid fill rule; valid values: {', '.join(FILL_RULES)} "
                     "(integers, LOW < HIGH, HIGH exclusive)")


def _shape(value: Any, key: str) -> tuple[int, ...]:
    values = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    if (isinstance(values, (list, tuple)) and
            all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values)):
        return tuple(values)
    raise InputError(f"{key}={value}: must be a list of positive integers (one sample, without the batch dimension)")


def parse_overrides(raw: Any) -> dict[str, dict[str, Any]]:
    """``model.inputs`` as ``{name: {"shape": tuple | None, "dtype": str | None, "fill": str | None}}``."""
    if raw is None or (isinstance(raw, Mapping) and not raw):
        return {}
    example = "e.g. model.inputs={state:{shape:[64],fill:zeros}}"
    if not isinstance(raw, Mapping):
        raise InputError(f"model.inputs={raw}: expected input names mapped to {{shape, dtype, fill}}, {example}")
    out: dict[str, dict[str, Any]] = {}
    for name, spec in raw.items():
        key = f"model.inputs.{name}"
        if not isinstance(spec, Mapping):
            raise InputError(f"{key}={spec}: expected a mapping with keys {', '.join(OVERRIDE_KEYS)}, {example}")
        unknown = sorted(set(spec) - set(OVERRIDE_KEYS))
        if unknown:
            raise InputError(f"{key}.{unknown[0]}: unknown key; valid keys: {', '.join(OVERRIDE_KEYS)}")
        shape = None if spec.get("shape") is None else _shape(spec["shape"], f"{key}.shape")
        dtype = spec.get("dtype")
        if dtype is not None and dtype not in DTYPES:
            raise InputError(f"{key}.dtype={dtype}: invalid value; valid values: {', '.join(DTYPES)}")
        fill = spec.get("fill")
        if fill is not None:
            parse_fill(fill, f"{key}.fill")
        out[str(name)] = {"shape": shape, "dtype": dtype, "fill": fill}
    return out
