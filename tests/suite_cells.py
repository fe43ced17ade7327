"""Cell names of the shipped suites that several test modules check (one list to change with the suite)."""

from importlib.util import find_spec

SMOKE_BACKENDS = ("torch", "onnxruntime", "torch_int8", "openvino", "executorch")
SMOKE_CELLS = {f"digits_cnn/{scheme}/{backend}" for scheme in ("fp32", "w8a8-pc", "w4-wo-pg32")
               for backend in SMOKE_BACKENDS}
# cells whose backend has no kernel for the scheme: skipped with this reason (its start) where the backend is installed
SMOKE_UNSUPPORTED = {"digits_cnn/w4-wo-pg32/executorch": "4-bit weight-only: XNNPACK has no weight-only kernel"}
# backends of an extra ([openvino], [executorch]) and the packages they need: without them their cells are skipped
# with the reason "... not installed (pip install ...)"
EXTRA_BACKENDS = {"openvino": ("openvino", "nncf"), "executorch": ("executorch", "torchao")}


def installed(backend: str) -> bool:
    """Whether ``backend`` can run here (the packages of its extra are installed)."""
    return all(find_spec(name) is not None for name in EXTRA_BACKENDS.get(backend, ()))


def smoke_skip_reasons(cells: set[str]) -> dict[str, str]:
    """The cells of ``cells`` the smoke suite skips here, and (the start of) their reason."""
    reasons = {}
    for cell in cells:
        backend = cell.rsplit("/", 1)[1]
        if not installed(backend):
            reasons[cell] = "not installed"
        elif cell in SMOKE_UNSUPPORTED:
            reasons[cell] = SMOKE_UNSUPPORTED[cell]
    return reasons


# the smoke suite on the base install's backends (the simulation and two runtimes' integer kernels): what the default
# run's suite test runs; openvino and executorch add ~1 min to the suite (importing executorch and lowering a .pte:
# ~30 s), so the whole suite runs in slow tests
SMOKE_BASE = "backend=torch,onnxruntime,torch_int8"
SMOKE_BASE_CELLS = {name for name in SMOKE_CELLS if name.rsplit("/", 1)[1] in ("torch", "onnxruntime", "torch_int8")}
# the smoke suite narrowed to its simulation cells: tests that need *a* suite, not the smoke suite's backends
SMOKE_TORCH = "backend=torch"
SMOKE_TORCH_CELLS = {name for name in SMOKE_CELLS if name.endswith("/torch")}
