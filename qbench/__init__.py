"""qbench: quantization benchmarking and accuracy-evaluation harness."""

__version__ = "0.1.0"
