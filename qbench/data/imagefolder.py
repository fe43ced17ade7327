"""``imagefolder``: ImageNet-style class folders (``root/[split]/<class>/<image>``), evaluated with the
model's standard transforms. Seeded, disjoint calibration and evaluation subsets; an optional JSON class
index maps folder names to the model's output indices (so pretrained ImageNet heads are scored right when
only some classes are present). Unreadable or corrupt images are skipped and counted
(``data.unreadable_images``). Decoded subsets are cached (file-locked) so every cell of a suite reuses them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import TensorDataset

from qbench.config import paths
from qbench.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from qbench.data.splits import DataSplits
from qbench.data.transforms import to_model_input
from qbench.storage import cached

log = logging.getLogger("qbench.data")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _folder(cfg: Any, split: str | None) -> Path:
    return Path(cfg.root) / split if split else Path(cfg.root)


def _classes(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def check_imagefolder(cfg: Any) -> str | None:
    if not cfg.root:
        return "dataset.root is required for imagefolder: a folder with one sub-folder of images per class"
    for split in {cfg.split, cfg.calibration_split} - {None} or {None}:
        folder = _folder(cfg, split)
        if not folder.is_dir():
            return f"dataset.root/split: {folder} does not exist (expected class sub-folders of images)"
        if not _classes(folder):
            return f"{folder}: no class sub-folders (ImageNet layout: {folder}/<class>/<image>.JPEG)"
    if cfg.class_index:
        try:
            mapping = json.loads(Path(cfg.class_index).read_text())
        except (OSError, ValueError) as exc:
            return f"dataset.class_index={cfg.class_index}: not a readable JSON object ({exc})"
        missing = [c for c in _classes(_folder(cfg, cfg.split)) if c not in mapping]
        if missing:
            return f"dataset.class_index={cfg.class_index} has no index for folder(s) {', '.join(missing[:5])}"
    return None


def _samples(folder: Path, class_to_idx: dict[str, int]) -> list[tuple[Path, int]]:
    out = []
    for name in _classes(folder):
        for path in sorted((folder / name).rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                out.append((path, class_to_idx[name]))
    return out


def _decode(samples: list[tuple[Path, int]], preprocess: Preprocess) -> tuple[TensorDataset, int]:
    """Decode and transform images; unreadable ones are skipped and counted."""
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor

    images, labels, bad = [], [], 0
    for path, label in samples:
        try:
            with Image.open(path) as img:
                tensor = pil_to_tensor(img.convert("RGB")).unsqueeze(0)
        except Exception as exc:  # corrupt/truncated/not an image: count it, keep going
            log.warning("unreadable image skipped: %s (%s)", path, str(exc).splitlines()[0][:100])
            bad += 1
            continue
        images.append(to_model_input(tensor, preprocess, IMAGENET_MEAN, IMAGENET_STD))
        labels.append(label)
    if not images:
        raise ValueError("no readable image in the selected subset")
    return TensorDataset(torch.cat(images), torch.tensor(labels, dtype=torch.long)), bad


def load_imagefolder_splits(cfg: Any, preprocess: Preprocess) -> DataSplits:
    key_data = {k: getattr(cfg, k) for k in ("root", "split", "calibration_split", "class_index", "split_seed",
                                             "calibration_size", "evaluation_size")}
    key = hashlib.sha256(json.dumps([key_data, asdict(preprocess)], sort_keys=True, default=str).encode()).hexdigest()
    cache = paths.cache_dir() / "data" / f"imagefolder-{key[:16]}.pt"
    # qbench's own cache of decoded tensors, not user input
    blob, _ = cached(cache, lambda: _build(cfg, preprocess), torch.save, lambda p: torch.load(p, weights_only=False))
    return DataSplits(train=None, calibration=blob["calibration"], evaluation=blob["evaluation"],
                      num_classes=blob["num_classes"], input_shape=preprocess.input_shape,
                      notes={"data.unreadable_images": float(blob["unreadable"])})


def _build(cfg: Any, preprocess: Preprocess) -> dict[str, Any]:
    eval_folder = _folder(cfg, cfg.split)
    classes = _classes(eval_folder)
    class_to_idx = ({c: int(i) for c, i in json.loads(Path(cfg.class_index).read_text()).items()}
                    if cfg.class_index else {c: i for i, c in enumerate(classes)})
    generator = torch.Generator().manual_seed(cfg.split_seed)
    pool = _samples(eval_folder, class_to_idx)
    order = torch.randperm(len(pool), generator=generator).tolist()
    evaluation = [pool[i] for i in order[: cfg.evaluation_size]]
    if cfg.calibration_split and cfg.calibration_split != cfg.split:
        cal_pool = _samples(_folder(cfg, cfg.calibration_split), class_to_idx)
        cal_order = torch.randperm(len(cal_pool), generator=generator).tolist()
        calibration = [cal_pool[i] for i in cal_order[: cfg.calibration_size]]
    else:  # disjoint images of the same folder
        calibration = [pool[i] for i in order[cfg.evaluation_size: cfg.evaluation_size + cfg.calibration_size]]
        if not calibration:
            raise ValueError(f"{eval_folder}: {len(pool)} images leave none for calibration after "
                             f"dataset.evaluation_size={cfg.evaluation_size}; lower it or set calibration_split")
    eval_set, bad_eval = _decode(evaluation, preprocess)
    cal_set, bad_cal = _decode(calibration, preprocess)
    return {"evaluation": eval_set, "calibration": cal_set, "unreadable": bad_eval + bad_cal,
            "num_classes": max(class_to_idx.values()) + 1}
