"""On-disk cache of trained reference models, keyed by what determines their weights.

Kept free of torch imports so the orchestrating process can tell cheaply whether training is needed.
A file lock (:func:`qbench.storage.file_lock`) makes first use safe when several workers need the same model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from qbench.config import paths

# Bump when training code changes in a way that changes the weights (invalidates cached models).
TRAINING_CODE_VERSION = 1
_DATASET_KEYS = ("name", "root", "split_seed", "calibration_size", "evaluation_size", "mean", "std")
# what defines a reference model's weights (other model keys, e.g. preprocessing overrides, do not)
_MODEL_KEYS = ("source", "arch", "in_channels", "input_size", "num_classes", "recipe", "input_shape")


def _plain(obj: Any) -> dict[str, Any]:
    if is_dataclass(obj):
        return asdict(obj)  # type: ignore[arg-type]
    from omegaconf import OmegaConf

    return OmegaConf.to_container(obj, resolve=True)  # type: ignore[return-value]


def reference_key(model_cfg: Any, dataset_cfg: Any) -> str:
    """Cache key of a reference model: hash of model, dataset split and recipe (and code version)."""
    # the name is only a label; an unset input_shape is left out so keys made before it existed still match
    model = {k: v for k, v in _plain(model_cfg).items() if k in _MODEL_KEYS and (k != "input_shape" or v)}
    dataset = {k: v for k, v in _plain(dataset_cfg).items() if k in _DATASET_KEYS}
    blob = json.dumps({"model": model, "dataset": dataset, "v": TRAINING_CODE_VERSION}, sort_keys=True)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:12]
    return f"{model_cfg.arch}-{dataset['name']}-{digest}"


def reference_dir(model_cfg: Any, dataset_cfg: Any) -> Path:
    return paths.cache_dir() / "models" / reference_key(model_cfg, dataset_cfg)


def is_cached(model_cfg: Any, dataset_cfg: Any) -> bool:
    directory = reference_dir(model_cfg, dataset_cfg)
    return (directory / "model.pt").is_file() and (directory / "meta.json").is_file()


def read_meta(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "meta.json").read_text())
