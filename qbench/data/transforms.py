"""Image tensors to a model's input contract: resize, centre crop, [0, 1] scaling, channel replication for
grey images, normalisation. The standard evaluation transform of torchvision's ImageNet weights (resize 256 /
232 -> centre crop 224), written on tensors so it applies to decoded ImageFolder images and to CIFAR-10 /
MNIST arrays alike, and generalised to targets whose height and width differ (text lines 48x320,
detectors 384x640).

Resize policy, for a target of H x W:

- with ``resize_size`` R (the weights' own, or ``model.resize_size``): scale keeping the aspect ratio so that
  the shorter side is R *and* the image covers H x W (scaled up further when R alone would leave it narrower
  or lower than the target), then centre crop H x W. For a square target with R >= its side this is exactly
  torchvision's resize-then-centre-crop.
- without it: stretch to H x W (aspect ratio not kept), as qbench always did for square targets; no
  letterboxing or padding.
"""

from __future__ import annotations

import torch
import torchvision.transforms.functional as TF

from qbench.data.preprocess import Preprocess


def to_model_input(images: torch.Tensor, preprocess: Preprocess, default_mean: tuple[float, ...],
                   default_std: tuple[float, ...]) -> torch.Tensor:
    """uint8 or [0, 1] float images (N, C, h, w) -> normalised float (N, C', H, W) for the model."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    channels, height, width = preprocess.input_shape
    if preprocess.resize_size:
        x = TF.center_crop(_cover(x, preprocess.resize_size, height, width), [height, width])
    elif x.shape[-2] != height or x.shape[-1] != width:
        x = TF.resize(x, [height, width], antialias=True)
    if x.shape[1] != channels:
        if x.shape[1] == 1:
            x = x.expand(-1, channels, -1, -1)
        elif channels == 1:
            x = x.mean(dim=1, keepdim=True)
    mean = preprocess.mean or default_mean
    std = preprocess.std or default_std
    if len(mean) != x.shape[1]:
        mean, std = (sum(mean) / len(mean),) * x.shape[1], (sum(std) / len(std),) * x.shape[1]
    return TF.normalize(x, list(mean), list(std)).contiguous()


def _cover(x: torch.Tensor, shorter: int, height: int, width: int) -> torch.Tensor:
    """Resize keeping the aspect ratio: shorter side ``shorter``, larger if needed to cover height x width."""
    h, w = x.shape[-2:]
    long = int(shorter * max(h, w) / min(h, w))  # torchvision's own rounding of the longer side
    new_h, new_w = (shorter, long) if h <= w else (long, shorter)
    if new_h >= height and new_w >= width:
        return TF.resize(x, [shorter], antialias=True)
    scale = max(height / h, width / w)
    return TF.resize(x, [max(height, round(h * scale)), max(width, round(w * scale))], antialias=True)
