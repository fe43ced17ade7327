"""Image tensors to a model's input contract: resize (shorter side), centre crop, [0, 1] scaling,
channel replication for grey images, normalisation. The standard evaluation transform of torchvision's
ImageNet weights (resize 256 / 232 -> centre crop 224), written on tensors so it applies to decoded
ImageFolder images and to CIFAR-10 / MNIST arrays alike."""

from __future__ import annotations

import torch
import torchvision.transforms.functional as TF

from qbench.zoo.preprocess import Preprocess


def to_model_input(images: torch.Tensor, preprocess: Preprocess, default_mean: tuple[float, ...],
                   default_std: tuple[float, ...]) -> torch.Tensor:
    """uint8 or [0, 1] float images (N, C, H, W) -> normalised float (N, C', S, S) for the model."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    channels, size, _ = preprocess.input_shape
    if preprocess.resize_size:
        x = TF.resize(x, [preprocess.resize_size], antialias=True)
        x = TF.center_crop(x, [size, size])
    elif x.shape[-1] != size or x.shape[-2] != size:
        x = TF.resize(x, [size, size], antialias=True)
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
