"""Cell names of the shipped suites that several test modules check (one list to change with the suite)."""

SMOKE_CELLS = {f"digits_cnn/{scheme}/{backend}" for scheme in ("fp32", "w8a8-pc", "w4-wo-pg32")
               for backend in ("torch", "onnxruntime", "torch_int8")}
