"""Cell names of the shipped suites that several test modules check (one list to change with the suite)."""

SMOKE_BACKENDS = ("torch", "onnxruntime", "torch_int8")
SMOKE_CELLS = {f"digits_cnn/{scheme}/{backend}" for scheme in ("fp32", "w8a8-pc", "w4-wo-pg32")
               for backend in SMOKE_BACKENDS}
# the smoke suite narrowed to its simulation cells: tests that need *a* suite, not the smoke suite's backends
SMOKE_TORCH = "backend=torch"
SMOKE_TORCH_CELLS = {name for name in SMOKE_CELLS if name.endswith("/torch")}
