"""Backend registry: ``backend.name`` (``backend=`` in configs) -> its package under qbench/backends/.

Importing this package, a backend's package or calling ``unsupported_reason`` never imports torch: the
orchestrator asks capabilities before any work. ``Backend.deploy`` (worker side) imports the package's
``deploy`` module; the types it takes and returns are in :mod:`qbench.backends.deployment`.
"""

from __future__ import annotations

from importlib import import_module

from qbench.backends.base import Backend, UnsupportedScheme
from qbench.config.names import BACKENDS as BACKEND_NAMES

# backend name -> (package, its Backend class); a package named ``torch`` would read like the library itself
_REGISTRY = {
    "torch": ("qbench.backends.torch_eager", "TorchEagerBackend"),
    "torch_int8": ("qbench.backends.torch_int8", "TorchInt8Backend"),
    "onnxruntime": ("qbench.backends.onnxruntime", "OnnxRuntimeBackend"),
}
BACKENDS = tuple(_REGISTRY)
assert set(BACKENDS) == set(BACKEND_NAMES), "qbench.config.names.BACKENDS lists every registered backend"


def get_backend(name: str) -> Backend:
    """The backend registered as ``name`` (capabilities; ``deploy`` in the worker)."""
    if name not in _REGISTRY:
        raise ValueError(f"backend.name={name}: invalid value; valid values: {', '.join(BACKENDS)}")
    module, cls = _REGISTRY[name]
    return getattr(import_module(module), cls)()


__all__ = ["BACKENDS", "Backend", "UnsupportedScheme", "get_backend"]
