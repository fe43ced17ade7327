"""Backend registry (names are the values of ``backend.name`` / ``backend=`` in configs)."""

from __future__ import annotations

from importlib import import_module

from qbench.backends.base import Backend, DeployContext, Deployment, UnsupportedScheme
from qbench.config.names import BACKENDS as BACKEND_NAMES

_REGISTRY = {
    "torch": ("qbench.backends.torch_eager", "TorchEagerBackend"),
    "torch_int8": ("qbench.backends.torch_int8", "TorchInt8Backend"),
    "onnxruntime": ("qbench.backends.onnxruntime", "OnnxRuntimeBackend"),
}
BACKENDS = tuple(_REGISTRY)
assert set(BACKENDS) == set(BACKEND_NAMES), "qbench.config.names.BACKENDS lists every registered backend"


def get_backend(name: str) -> Backend:
    if name not in _REGISTRY:
        raise ValueError(f"backend.name={name}: invalid value; valid values: {', '.join(BACKENDS)}")
    module, cls = _REGISTRY[name]
    return getattr(import_module(module), cls)()


__all__ = ["BACKENDS", "Backend", "DeployContext", "Deployment", "UnsupportedScheme", "get_backend"]
