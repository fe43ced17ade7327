"""Reference (FP32) models: trained by qbench on first use, then loaded from the cache."""

from __future__ import annotations

import os
import time
from typing import Any

import torch
from torch import nn

from qbench.data import DataSplits, load_splits
from qbench.storage import file_lock, write_atomic, write_json_atomic
from qbench.zoo.architectures import build_architecture
from qbench.zoo.cache import TRAINING_CODE_VERSION, is_cached, read_meta, reference_dir
from qbench.zoo.training import train


def load_reference(
    model_cfg: Any, dataset_cfg: Any, splits: DataSplits | None = None, show_progress: bool = True
) -> tuple[nn.Module, dict[str, Any]]:
    """The trained FP32 model (eval mode) and its metadata; trains and caches it if it is not cached yet."""
    directory = reference_dir(model_cfg, dataset_cfg)
    if not is_cached(model_cfg, dataset_cfg):
        with file_lock(directory):
            if not is_cached(model_cfg, dataset_cfg):  # another process may have trained it meanwhile
                splits = splits or load_splits(dataset_cfg, model_cfg)
                _train_and_save(model_cfg, splits, directory, show_progress)
    model = build_architecture(model_cfg.arch, model_cfg.in_channels, model_cfg.num_classes)
    model.load_state_dict(torch.load(directory / "model.pt", weights_only=True))
    return model.eval(), read_meta(directory)


def _train_and_save(model_cfg: Any, splits: DataSplits, directory: Any, show_progress: bool) -> None:
    recipe = model_cfg.recipe
    torch.manual_seed(recipe.seed)
    model = build_architecture(model_cfg.arch, model_cfg.in_channels, model_cfg.num_classes)
    stats = train(model, splits, recipe, description=f"training {model_cfg.name}", show_progress=show_progress)
    write_atomic(directory / "model.pt", lambda tmp: torch.save(model.state_dict(), tmp))
    meta = {
        "arch": model_cfg.arch,
        "name": model_cfg.name,
        "eval_top1": stats["eval_top1"],
        "train_time_s": stats["train_time_s"],
        "train_samples": len(splits.train) if splits.train is not None else 0,
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "trained_by_pid": os.getpid(),
        "code_version": TRAINING_CODE_VERSION,
    }
    write_json_atomic(directory / "meta.json", meta)
