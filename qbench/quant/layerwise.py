"""Layer-by-layer passes over a simulated model, shared by bias correction (:mod:`qbench.quant.cle`) and AdaRound /
QDrop (:mod:`qbench.quant.adaround`): the order layers run in, and what one layer sees (its input, the mean of its
output) in the float network or in the quantized network as quantized so far.

A pass that only needs layer ``l`` stops right after it (an exception raised by a hook), so a sequential
algorithm over L layers costs about L/2 forward passes over the calibration batches, not L.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from qbench.quant.simulate import QuantizedLayer, quantized_layers

Batches = Sequence[tuple[torch.Tensor, ...]]


class _Stop(Exception):
    """Raised by a hook once the layer of interest has run: the rest of the pass is not needed."""


@contextmanager
def float_network(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Every QuantizedLayer computes with its float layer (nothing quantized) while inside, when ``enabled``."""
    layers = quantized_layers(model) if enabled else []
    for layer in layers:
        layer.float_forward = True
    try:
        yield
    finally:
        for layer in layers:
            layer.float_forward = False


@contextmanager
def float_activations(model: nn.Module) -> Iterator[None]:
    """Quantized weights, float activations: the input quantizers are set aside while inside."""
    layers = quantized_layers(model)
    saved = [layer.input_quantizer for layer in layers]
    for layer in layers:
        layer.input_quantizer = None
    try:
        yield
    finally:
        for layer, quantizer in zip(layers, saved, strict=True):
            layer.input_quantizer = quantizer


@torch.no_grad()
def execution_order(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> list[QuantizedLayer]:
    """The QuantizedLayers in the order one float forward pass of ``batch`` calls them (layers never called are
    left out)."""
    order: list[QuantizedLayer] = []

    def hook(layer: nn.Module, args: Any) -> None:
        if layer not in order:
            order.append(layer)  # type: ignore[arg-type]

    handles = [layer.register_forward_pre_hook(hook) for layer in quantized_layers(model)]
    try:
        with float_network(model):
            model(*batch)
    finally:
        for handle in handles:
            handle.remove()
    return order


@torch.no_grad()
def _partial_pass(model: nn.Module, layer: QuantizedLayer, batches: Batches,
                  take: Callable[[QuantizedLayer, tuple[Any, ...], Any], None], output: bool) -> None:
    """Run ``model`` on each batch up to ``layer``; ``take(layer, args, out)`` receives what ``layer`` got (and,
    when ``output``, what it returned, else None) once per batch."""
    def pre(module: nn.Module, args: tuple[Any, ...]) -> None:
        take(layer, args, None)
        raise _Stop

    def post(module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        take(layer, args, out)
        raise _Stop

    handle = layer.register_forward_hook(post) if output else layer.register_forward_pre_hook(pre)
    try:
        for batch in batches:
            try:
                model(*batch)
            except _Stop:
                continue
    finally:
        handle.remove()


def layer_inputs(model: nn.Module, layer: QuantizedLayer, batches: Batches, *, float_model: bool) -> torch.Tensor:
    """``layer``'s input (before its input quantizer) over all batches, concatenated along the batch dimension:
    in the float network when ``float_model``, else in the simulated network as it is now."""
    chunks: list[torch.Tensor] = []
    with float_network(model, float_model):
        _partial_pass(model, layer, batches, lambda _, args, __: chunks.append(args[0].detach()), output=False)
    return torch.cat(chunks)


def channel_mean(y: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """Mean of a Conv2d output over batch and space ([C]), of a Linear output over all but its last dim."""
    if isinstance(layer, nn.Conv2d):
        return y.mean(dim=(0, 2, 3))
    return y.reshape(-1, y.shape[-1]).mean(0)


def output_mean(model: nn.Module, layer: QuantizedLayer, batches: Batches) -> torch.Tensor:
    """Per-channel mean of ``layer``'s output over all batches (sample-weighted), in the simulated network."""
    total: list[torch.Tensor] = []
    counts: list[int] = []

    def take(_: QuantizedLayer, args: tuple[Any, ...], out: Any) -> None:
        total.append(channel_mean(out.detach(), layer.layer) * len(args[0]))
        counts.append(len(args[0]))

    _partial_pass(model, layer, batches, take, output=True)
    return torch.stack(total).sum(0) / sum(counts)


@torch.no_grad()
def float_output_means(model: nn.Module, batches: Batches) -> dict[str, torch.Tensor]:
    """Per-channel mean of every quantized layer's output in the float network, by layer name (one pass)."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook(layer: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        assert isinstance(layer, QuantizedLayer)
        sums[layer.name] = sums.get(layer.name, 0) + channel_mean(out.detach(), layer.layer) * len(args[0])
        counts[layer.name] = counts.get(layer.name, 0) + len(args[0])

    handles = [layer.register_forward_hook(hook) for layer in quantized_layers(model)]
    try:
        with float_network(model):
            for batch in batches:
                model(*batch)
    finally:
        for handle in handles:
            handle.remove()
    return {name: total / counts[name] for name, total in sums.items()}
