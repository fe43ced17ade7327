"""Operation counts of a model's compute layers (Conv2d / Linear): MACs per sample, measured with forward
hooks on one sample so that every layer's real input/output shape is used."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LayerCount:
    """One compute layer: multiply-accumulates per sample and its weight element count."""

    name: str
    kind: str  # conv | linear
    macs: int
    weight_numel: int


def conv2d_macs(module: nn.Conv2d, output: torch.Tensor) -> int:
    """MACs per sample of a Conv2d: every output element needs Cin/groups x kh x kw multiply-adds."""
    per_output = (module.in_channels // module.groups) * math.prod(module.kernel_size)
    return int(output[0].numel()) * per_output


def linear_macs(module: nn.Linear, output: torch.Tensor) -> int:
    """MACs per sample of a Linear: out_features x in_features for every row of the sample."""
    rows = int(output[0].numel()) // module.out_features
    return rows * module.in_features * module.out_features


@torch.no_grad()
def count_layers(model: nn.Module, example: tuple[int, ...] | tuple[torch.Tensor, ...]) -> dict[str, LayerCount]:
    """MACs of every Conv2d/Linear of ``model`` for one sample: ``example`` is the model's inputs for one sample
    (a batch of 1, positional), or the shape (C, H, W) of an image input."""
    counts: dict[str, LayerCount] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            hooks.append(module.register_forward_hook(
                lambda m, i, o, name=name: counts.__setitem__(
                    name, LayerCount(name, "conv", conv2d_macs(m, o), m.weight.numel()))))
        elif isinstance(module, nn.Linear):
            hooks.append(module.register_forward_hook(
                lambda m, i, o, name=name: counts.__setitem__(
                    name, LayerCount(name, "linear", linear_macs(m, o), m.weight.numel()))))
    was_training = model.training
    try:
        model.eval()
        inputs = example if isinstance(example[0], torch.Tensor) else (torch.zeros(1, *example),)
        model(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return counts


def total_macs(counts: dict[str, LayerCount]) -> int:
    return sum(c.macs for c in counts.values())
