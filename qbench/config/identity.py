"""Identity of a cell: its scheme label, readable name and hash (what changes what it computes)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from omegaconf import DictConfig, OmegaConf

from qbench.config.layers import label_suffix
from qbench.config.names import DEFAULT_TASK
from qbench.config.schema import QBenchConfig, QuantConfig


def scheme_label(quant: QuantConfig | DictConfig) -> str:
    """Short, honest label of a scheme derived from its values (not from the preset name).

    e.g. ``fp32``, ``w8a8``, ``w8a8-pc``, ``w4a8-pc``, ``w4-wo-pg128``, ``dyn8-pc``, ``qat-w4a8-pc``; per-layer
    overrides add ``+3x8b+2xfp`` (*patterns* of ``quant.layers`` per kind of override, not layers: the label is
    computed without the model, see :mod:`qbench.config.layers`).
    """
    method = quant.method
    if method == "none":
        return "fp32"
    w, a = quant.weights, quant.activations

    def gran(tq: Any) -> str:
        return {"per_tensor": "", "per_channel": "-pc", "per_group": f"-pg{tq.group_size}"}[tq.granularity]

    if method == "weight_only":
        label = f"w{w.bits}-wo{gran(w)}"
    elif method == "dynamic":
        label = f"dyn-w{w.bits}a{a.bits}{gran(w)}"
    else:
        label = f"w{w.bits}a{a.bits}{gran(w)}"
        if method == "qat":
            label = f"qat-{label}"
    if w.observer != "minmax":
        label += f"-{w.observer}"
    if method in ("ptq", "qat") and a.observer != "minmax":
        label += f"-act{a.observer}"
    algorithm = getattr(quant, "algorithm", "rtn")
    if algorithm != "rtn":
        label += f"-{algorithm}"
    target_isa = getattr(quant, "target_isa", "none")
    label += label_suffix(quant)
    if target_isa != "none":
        label += f"@{target_isa}"
    return label


def cell_name(cfg: QBenchConfig | DictConfig) -> str:
    """Readable cell name, e.g. ``resnet18/w8a8-pc/onnxruntime``; the dataset is added when not digits,
    the task when not image classification (``digit_regression:digits_cnn/...``), the device when not cpu,
    settings that differ from the defaults (``/u8s8`` int8 path, ``/opt-basic`` ORT graph optimization, ``/nncf``
    OpenVINO int8 source, ``/obs-xnnpack`` ExecuTorch observers), and explicit thread counts / latency batch sizes
    as ``/t1``, ``/b8``."""
    model = cfg.model.name if cfg.dataset.name == "digits" else f"{cfg.model.name}@{cfg.dataset.name}"
    task = getattr(getattr(cfg, "task", None), "name", DEFAULT_TASK)
    if task != DEFAULT_TASK:  # a prefix: reports read the scheme as the second "/" part
        model = f"{task}:{model}"
    name = f"{model}/{scheme_label(cfg.quant)}/{cfg.backend.name}"
    if cfg.backend.device != "cpu":
        name += f"@{cfg.backend.device}"
    int8_path = getattr(cfg.backend, "int8_path", "auto")
    if int8_path != "auto":
        name += f"/{int8_path}"
    source = getattr(cfg.backend, "int8_source", "qdq")  # openvino: NNCF's int8 model instead of qbench's QDQ
    if source != "qdq":
        name += f"/{source}"
    observers = getattr(cfg.backend, "observers", "qbench")  # executorch: the XNNPACK quantizer's own observers
    if observers != "qbench":
        name += f"/obs-{observers}"
    level = getattr(cfg.backend, "graph_optimization_level", "all")
    if cfg.backend.name == "onnxruntime" and level != "all":  # a sweep over levels must not repeat a name
        name += f"/opt-{level}"
    if cfg.measure.threads.intra_op is not None:
        name += f"/t{cfg.measure.threads.intra_op}"
    if cfg.measure.latency.batch_size != 1:
        name += f"/b{cfg.measure.latency.batch_size}"
    return name


# Keys that do not change what a cell computes: excluded from its identity hash.
_NON_SEMANTIC = ("tracking", "suite", "results_dir", "resume", "hydra")
# the task every cell had before tasks were configurable: left out of the hash so existing cells keep theirs
# (resumed suites and records still match)
_DEFAULT_TASK_NODE = {"name": DEFAULT_TASK, "options": {}}
# Literal on purpose, not read from the dataclasses: these are the values each key had when it was added, so a
# later change of a default gives the cells that use the new value a new hash instead of an old cell's.
_LATER_DEFAULTS: dict[str, dict[str, Any]] = {
    "quant": {"algorithm": "rtn", "algorithm_options": {}, "layers": {}},
    "model": {"gguf_file": None, "pooling": "mean", "keep_float": []},
    # the paired window adds figures to a quantized cell and changes none of its unpaired ones
    # (block_calls=20 until 2026-11-29: the block-sized-by-time window replaced it under the same hash)
    "measure": {"paired": {"enabled": True, "block_ms": 100.0, "min_block_calls": 5, "min_blocks": 8,
                           "max_blocks": 40, "max_duration_s": 10.0},
                "scenario": "none", "scenario_mode": "quick", "server": {"p99_ms": 10.0, "search_steps": 6},
                "multi_stream_samples": 8, "layer_profile": False},
}


def cell_config_dict(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config of a cell as plain data, without Hydra's own node."""
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    assert isinstance(container, dict)
    container.pop("hydra", None)
    return container


def cell_hash(cfg: DictConfig | dict[str, Any]) -> str:
    """Identity of a cell: a hash of everything that changes what it computes or measures."""
    data = cfg if isinstance(cfg, dict) else cell_config_dict(cfg)
    semantic = {k: v for k, v in data.items() if k not in _NON_SEMANTIC}
    if semantic.get("task") == _DEFAULT_TASK_NODE:
        del semantic["task"]
    # keys added after cells were recorded leave the hash of cells that keep their defaults unchanged
    for group, defaults in _LATER_DEFAULTS.items():
        node = semantic.get(group)
        if isinstance(node, dict):
            semantic[group] = {k: v for k, v in node.items() if not (k in defaults and v == defaults[k])}
    blob = json.dumps(semantic, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts to dotted keys (``quant.weights.bits``) for MLflow params."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{full}."))
        else:
            out[full] = value
    return out
