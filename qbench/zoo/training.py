"""The fixed training recipe for reference models: SGD + Nesterov, warm-up then cosine LR, label
smoothing and light geometric augmentation. Deterministic for a given seed and thread count."""

from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from qbench.data.splits import DataSplits


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random rotation (±10°), scale (0.9-1.1) and shift (±10 %) of a batch, edges replicated."""
    n = x.shape[0]
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(10)
    scale = 0.9 + 0.2 * torch.rand(n, generator=generator)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * 0.1 * 2  # grid units span [-1, 1]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="border", align_corners=False)


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warm-up to ``peak`` then cosine decay to zero."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * peak * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def evaluate_top1(model: nn.Module, splits: DataSplits, batch_size: int = 256) -> float:
    model.eval()
    correct = 0
    for x, y in splits.loader("evaluation", batch_size):
        correct += int((model(x).argmax(1) == y).sum())
    return correct / len(splits.evaluation)


def train(
    model: nn.Module,
    splits: DataSplits,
    recipe: Any,
    *,
    description: str = "training",
    show_progress: bool = True,
    loss_fn: Any = None,
) -> dict[str, float]:
    """Train ``model`` in place on the train split with ``recipe``; returns timing and accuracy figures."""
    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)
    loader = splits.loader("train", recipe.batch_size, shuffle=True, seed=recipe.seed)
    params_decay = [p for p in model.parameters() if p.ndim > 1]
    params_other = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": params_decay, "weight_decay": recipe.weight_decay},
              {"params": params_other, "weight_decay": 0.0}]
    optimizer: torch.optim.Optimizer
    if recipe.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=True)
    elif recipe.optimizer == "adamw":
        optimizer = torch.optim.AdamW(groups, lr=recipe.lr)
    else:
        raise ValueError(f"recipe.optimizer={recipe.optimizer}: valid values: sgd, adamw")
    criterion = loss_fn or nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    total_steps = recipe.epochs * len(loader)
    warmup_steps = recipe.warmup_epochs * len(loader)
    start = time.perf_counter()
    step = 0
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
               TimeRemainingColumn())
    with Progress(*columns, disable=not show_progress, transient=False) as progress:
        task = progress.add_task(description, total=recipe.epochs, status="")
        for epoch in range(recipe.epochs):
            model.train()
            running, seen = 0.0, 0
            for x, y in loader:
                if recipe.augment:
                    x = augment(x, generator)
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, total_steps, warmup_steps, recipe.lr)
                loss = criterion(model(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                running += float(loss.detach()) * len(y)
                seen += len(y)
                step += 1
            progress.update(task, advance=1, status=f"epoch {epoch + 1} loss {running / seen:.3f}")
    model.eval()
    return {"train_time_s": time.perf_counter() - start, "eval_top1": evaluate_top1(model, splits)}
