"""Per-layer kernel time of a deployed ONNX Runtime model, from ONNX Runtime's own profiler.

``qbench tune --objective latency`` asks which layers run *slower* in int8 than in float on this backend (on this
CPU, resnet18's last-stage 3x3 convolutions at 1x1-2x2 outputs take ~115 µs in QLinearConv against ~40 µs in the
FP32 Conv), so that keeping them float makes the model faster at no accuracy cost. Only the runtime knows what each
kernel costs after its graph optimizations (fusions, NCHWc layouts), so the profile is taken on the artifact the
cell deployed, with the cell's session settings, in a separate session: profiling slows the calls it records, so
it never shares a session with a latency window.

Nodes are mapped to qbench's layer names through their initializers: an optimized graph renames nodes and
reorders weights (``reorder_token_N``) but keeps ``<layer>.bias`` (BN-folded exports) and
``<layer>.weight_quantized`` (ORT's quantizer), so a node belongs to the layer whose name prefixes one of its
initializer inputs. Nodes that match no layer (quantize/dequantize, pooling, reshapes) are not attributed.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

KERNEL_SUFFIX = "_kernel_time"


def node_layers(optimized_model: Path, layers: Iterable[str]) -> dict[str, str]:
    """Node name -> layer name for the nodes of the optimized graph that read one of ``layers``' initializers."""
    import onnx

    graph = onnx.load(str(optimized_model), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    by_length = sorted(layers, key=len, reverse=True)  # "layer1.0.conv1" before "layer1.0.conv"
    mapping: dict[str, str] = {}
    for node in graph.node:
        for name in node.input:
            if name not in initializers:
                continue
            layer = next((lay for lay in by_length if name.startswith(f"{lay}.")), None)
            if layer is not None:
                mapping[node.name] = layer
                break
    return mapping


def layer_times_us(make_session: Callable[[Any], Any], feed: Mapping[str, np.ndarray], optimized_model: Path,
                   layers: Iterable[str], workdir: Path, runs: int = 100, warmup: int = 20) -> dict[str, float]:
    """Median kernel time per call (µs) of each layer of ``layers`` over ``runs`` profiled calls (summed over the
    nodes a layer maps to); ``make_session(options)`` builds the session from the cell's own session options."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(workdir / "ort_profile")
    session = make_session(options)
    for _ in range(warmup):
        session.run(None, dict(feed))
    for _ in range(runs):
        session.run(None, dict(feed))
    trace = Path(session.end_profiling())
    events = [e for e in json.loads(trace.read_text()) if e.get("cat") == "Node"
              and e.get("name", "").endswith(KERNEL_SUFFIX)]
    trace.unlink(missing_ok=True)
    per_node: dict[str, list[float]] = defaultdict(list)
    for event in events:
        per_node[event["name"][: -len(KERNEL_SUFFIX)]].append(float(event["dur"]))
    mapping = node_layers(optimized_model, layers)
    times: dict[str, float] = defaultdict(float)
    for node, durations in per_node.items():
        if node in mapping:
            times[mapping[node]] += statistics.median(durations[-runs:])  # the profiled calls, not the warm-up
    return dict(times)
