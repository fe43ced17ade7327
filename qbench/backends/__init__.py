"""Backend registry: ``backend.name`` (``backend=`` in configs) -> its package under qbench/backends/.

Importing this package, a backend's package or calling ``unsupported_reason`` never imports torch: the
orchestrator asks capabilities before any work. ``Backend.deploy`` (worker side) imports the package's
``deploy`` module; the types it takes and returns are in :mod:`qbench.backends.deployment`.
"""

from __future__ import annotations

from dataclasses import fields
from importlib import import_module

from hydra.core.config_store import ConfigStore

from qbench.backends.base import Backend, UnsupportedScheme
from qbench.config.names import BACKENDS as BACKEND_NAMES
from qbench.config.schema import BackendConfig

# backend name -> (package, its Backend class, its config dataclass in the package's ``config`` module or None for
# the shared BackendConfig); a package named ``torch`` would read like the library itself
_REGISTRY = {
    "torch": ("qbench.backends.torch_eager", "TorchEagerBackend", None),
    "torch_int8": ("qbench.backends.torch_int8", "TorchInt8Backend", "TorchInt8Config"),
    "onnxruntime": ("qbench.backends.onnxruntime", "OnnxRuntimeBackend", "OnnxRuntimeConfig"),
    "openvino": ("qbench.backends.openvino", "OpenVinoBackend", "OpenVinoConfig"),
    "executorch": ("qbench.backends.executorch", "ExecuTorchBackend", "ExecuTorchConfig"),
}
BACKENDS = tuple(_REGISTRY)
assert set(BACKENDS) == set(BACKEND_NAMES), "qbench.config.names.BACKENDS lists every registered backend"


def get_backend(name: str) -> Backend:
    """The backend registered as ``name`` (capabilities; ``deploy`` in the worker)."""
    if name not in _REGISTRY:
        raise ValueError(f"backend.name={name}: invalid value; valid values: {', '.join(BACKENDS)}")
    module, cls, _ = _REGISTRY[name]
    return getattr(import_module(module), cls)()


def backend_schema(name: str) -> type[BackendConfig]:
    """The config dataclass of backend ``name`` (the shared BackendConfig when it has no settings of its own)."""
    if name not in _REGISTRY:
        raise ValueError(f"backend.name={name}: invalid value; valid values: {', '.join(BACKENDS)}")
    module, _, schema = _REGISTRY[name]
    return getattr(import_module(f"{module}.config"), schema) if schema else BackendConfig


def foreign_setting(backend: str, key: str) -> str | None:
    """Why ``backend.KEY`` cannot be set for ``backend``: the setting belongs to other backends (one line naming
    them), or None when ``backend`` has it or no backend does (Hydra reports an unknown key itself)."""
    if backend not in _REGISTRY or key in {f.name for f in fields(backend_schema(backend))}:
        return None
    owners = [name for name in BACKENDS if key in {f.name for f in fields(backend_schema(name))}]
    if not owners:
        return None
    own = ", ".join(f.name for f in fields(backend_schema(backend)))
    return (f"backend.{key} is a setting of backend={'/'.join(owners)}, not of backend={backend} "
            f"(its settings: {own})")


def register_backend_schemas() -> None:
    """Store each backend's schema in Hydra's ConfigStore as ``backend/NAME_schema``, the first default of
    conf/backend/NAME.yaml (Hydra's pattern for a config group whose options have schemas of their own)."""
    store = ConfigStore.instance()
    for name in BACKENDS:
        store.store(group="backend", name=f"{name}_schema", node=backend_schema(name))


__all__ = ["BACKENDS", "Backend", "UnsupportedScheme", "backend_schema", "foreign_setting", "get_backend",
           "register_backend_schemas"]
