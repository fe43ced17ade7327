"""Reading a model's input contract from an ONNX file (the contract itself and ``model.inputs``:
:mod:`qbench.config.inputs`)."""

from __future__ import annotations

from typing import Any

from qbench.config.inputs import DTYPES, FLOAT_DTYPES, InputContract, InputError, InputSpec, parse_fill, parse_overrides


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
