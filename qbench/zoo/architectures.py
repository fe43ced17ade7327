"""Network definitions: qbench's small digits CNN and torchvision's classification architectures."""

from __future__ import annotations

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """Three conv-BN-ReLU blocks (16-32-64 channels, two stride-2), global average pool, linear head."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(*block(in_channels, 16, 1), *block(16, 32, 2), *block(32, 64, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def build_architecture(arch: str, in_channels: int, num_classes: int) -> nn.Module:
    """A freshly initialised network of the named architecture."""
    if arch == "digits_cnn":
        return DigitsCNN(in_channels, num_classes)
    import torchvision

    if in_channels != 3:
        raise ValueError(f"torchvision architecture {arch} expects 3 input channels, got {in_channels}")
    builder = getattr(torchvision.models, arch, None)
    if builder is None:
        raise ValueError(f"unknown architecture {arch!r}")
    return builder(weights=None, num_classes=num_classes)
