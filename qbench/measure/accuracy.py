"""Classification accuracy of a deployed model and its fidelity to the FP32 reference, from class scores
(logits; the image classification task, qbench/tasks/image_classification.py, passes the model's first output).

For outputs that are not one vector per sample (a text
recogniser's [batch, steps, classes], a detector's [batch, anchors, values]) fidelity is computed over the
last dimension: every position is one prediction (agreement of argmax, KL of softmax), SQNR over all values.
That is a fidelity measure, not the model's task metric (no CTC decoding, no box matching); top-1/top-5 are
only computed for [batch, classes] outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return float((top == labels.unsqueeze(1)).any(dim=1).float().mean())


def sqnr_db(reference: torch.Tensor, output: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio of ``output`` against ``reference`` in dB (inf when identical)."""
    noise = float((reference.double() - output.double()).pow(2).sum())
    signal = float(reference.double().pow(2).sum())
    if noise == 0.0:
        return float("inf")
    return 10.0 * torch.log10(torch.tensor(signal / noise)).item()


def kl_divergence(reference: torch.Tensor, output: torch.Tensor) -> float:
    """Mean KL(softmax(reference) || softmax(output)) over samples, in nats."""
    log_p = F.log_softmax(reference.double(), dim=1)
    log_q = F.log_softmax(output.double(), dim=1)
    # KL >= 0; identical distributions can round to -1e-17
    return max(0.0, float((log_p.exp() * (log_p - log_q)).sum(dim=1).mean()))


def accuracy_metrics(
    logits: torch.Tensor, labels: torch.Tensor | None, fp32_logits: torch.Tensor, prefix: str = "acc"
) -> dict[str, float]:
    """top-1, top-5 (absent without labels), agreement of top-1 predictions with FP32, logit SQNR (dB)
    and KL to FP32 (agreement and KL over the last dimension, absent when it has one value)."""
    metrics = {f"{prefix}.sqnr_db": sqnr_db(fp32_logits, logits)}
    if logits.dim() >= 2 and logits.shape[-1] > 1:
        rows, fp32_rows = logits.reshape(-1, logits.shape[-1]), fp32_logits.reshape(-1, logits.shape[-1])
        metrics[f"{prefix}.agreement_fp32"] = float((rows.argmax(1) == fp32_rows.argmax(1)).float().mean())
        metrics[f"{prefix}.kl_fp32"] = kl_divergence(fp32_rows, rows)
    if labels is not None and logits.dim() == 2:
        fp32_top1 = topk_accuracy(fp32_logits, labels, 1)
        top1 = topk_accuracy(logits, labels, 1)
        metrics.update({
            f"{prefix}.top1": top1,
            f"{prefix}.top5": topk_accuracy(logits, labels, 5),
            f"{prefix}.fp32_top1": fp32_top1,
            f"{prefix}.delta_top1": top1 - fp32_top1,
        })
    return metrics
