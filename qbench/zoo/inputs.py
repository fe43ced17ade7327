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
Kept free of torch imports: the orchestrator checks contracts before any work.
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


# ---------------------------------------------------------------------------------------------- ONNX
def _declared_inputs(path: str) -> list[tuple[str, list[int | str] | None, str]]:
    """(name, dims or None when the rank is unknown, numpy dtype name) of the file's non-initializer inputs;
    a symbolic dimension is its name (``"?"`` when unnamed)."""
    import numpy as np
    import onnx
    from onnx import helper

    graph = onnx.load(path, load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    out = []
    for value in graph.input:
        if value.name in initializers:
            continue
        if not value.type.HasField("tensor_type"):
            raise InputError(f"model.path={path}: input {value.name!r} is not a tensor (sequence/map inputs are "
                             "not supported)")
        tensor = value.type.tensor_type
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name
        dims = ([d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or "?")
                 for d in tensor.shape.dim] if tensor.HasField("shape") else None)
        out.append((value.name, dims, dtype))
    return out


def onnx_contract(model_cfg: Any) -> InputContract:
    """The contract of ``model_cfg.path`` completed by ``model.input_shape`` / ``model.inputs``."""
    path = str(model_cfg.path)
    declared = _declared_inputs(path)
    names = [name for name, _, _ in declared]
    overrides = parse_overrides(getattr(model_cfg, "inputs", None))
    for name in overrides:
        if name not in names:
            raise InputError(f"model.inputs.{name}: {path} has no input {name!r}; its inputs: {', '.join(names)}")
    specs, batches = [], {}
    for index, (name, dims, dtype) in enumerate(declared):
        override = overrides.get(name, {})
        if dims is not None and not dims:
            raise InputError(f"model.path={path}: input {name!r} is a scalar; qbench batches every input along its "
                             "first dimension (wrap the model so the scalar is a constant)")
        if dims is not None and isinstance(dims[0], int):
            batches[name] = dims[0]
        shape = _sample_shape(path, index, name, dims, override.get("shape"), model_cfg)
        if override.get("dtype") and override["dtype"] != dtype:
            raise InputError(f"model.inputs.{name}.dtype={override['dtype']}: the file declares {dtype}")
        if dtype not in DTYPES:
            raise InputError(f"model.path={path}: input {name!r} has dtype {dtype}; supported: {', '.join(DTYPES)}")
        fill = override.get("fill") or ("normal" if dtype in FLOAT_DTYPES else "zeros")
        if parse_fill(fill, f"model.inputs.{name}.fill")[0] in ("normal", "uniform") and dtype not in FLOAT_DTYPES:
            raise InputError(f"model.inputs.{name}.fill={fill}: input {name!r} is {dtype}; integer inputs take "
                             "zeros, ones or randint:LOW:HIGH")
        specs.append(InputSpec(name, shape, dtype, fill))
    if len(set(batches.values())) > 1:
        found = ", ".join(f"{n}: {b}" for n, b in batches.items())
        raise InputError(f"model.path={path}: inputs fix different batch sizes ({found})")
    return InputContract(tuple(specs), next(iter(batches.values()), None))


def _sample_shape(path: str, index: int, name: str, dims: list[int | str] | None, shape: tuple[int, ...] | None,
                  model_cfg: Any) -> tuple[int, ...]:
    """One sample's shape: the file's numeric dims, completed or checked against the config's."""
    key = f"model.inputs.{name}.shape"
    if shape is None and index == 0 and model_cfg.input_shape:
        shape, key = tuple(int(v) for v in model_cfg.input_shape), "model.input_shape"
    if shape is not None:
        if dims is not None and (len(shape) != len(dims) - 1 or
                                 any(isinstance(d, int) and d != s for d, s in zip(dims[1:], shape, strict=True))):
            raise InputError(f"{key}={list(shape)}: the file declares input {name!r} as {dims}")
        return shape
    sample = [] if dims is None else dims[1:]
    if dims is None or not all(isinstance(d, int) for d in sample):
        hint = ("model.input_shape=[C,H,W]" if index == 0 and dims is not None and len(dims) == 4
                else f"model.inputs={{{name}:{{shape:[...]}}}}")
        raise InputError(f"model.path={path}: input {name!r} has shape {dims or 'unknown'}; set {hint} "
                         "(one sample, without the batch dimension)")
    return tuple(int(d) for d in sample)


def model_contract(model_cfg: Any) -> InputContract:
    """The input contract of ``model_cfg`` whatever its source."""
    if model_cfg.source == "onnx":
        return onnx_contract(model_cfg)
    from qbench.zoo.preprocess import preprocess_for

    return image_contract(preprocess_for(model_cfg).input_shape)
