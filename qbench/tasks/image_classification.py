"""``image_classification``: labelled images in, class scores out of the model's first output.

Task metric ``acc.top1`` (higher is better), also ``acc.top5``, ``acc.fp32_top1`` and ``acc.delta_top1``;
fidelity to FP32: agreement of predictions, SQNR and KL of the scores (over the last dimension, so outputs with
a step axis — a text recogniser's [batch, steps, classes] — are compared position by position; top-1/top-5 only
for [batch, classes]). On real backends the deployment gap: ``acc.top1_simulated``, ``acc.gap_top1``,
``acc.agreement_simulated``, ``acc.sqnr_vs_simulated_db``. Data without labels (``dataset=fake``) gets the
fidelity figures only.
"""

from __future__ import annotations

from qbench.measure import accuracy
from qbench.tasks import Evaluation, Task, first, register


@register
class ImageClassification(Task):
    name = "image_classification"
    metric = "acc.top1"
    higher_is_better = True
    delta_metric = "acc.delta_top1"

    def score(self, ev: Evaluation) -> dict[str, float]:
        out, ref = first(ev.deployed), first(ev.fp32)
        metrics = accuracy.accuracy_metrics(out, ev.targets, ref)
        if ev.simulated is not None:
            sim = first(ev.simulated)
            if ev.targets is not None and "acc.top1" in metrics:
                metrics["acc.top1_simulated"] = accuracy.topk_accuracy(sim, ev.targets, 1)
                metrics["acc.gap_top1"] = metrics["acc.top1"] - metrics["acc.top1_simulated"]
            metrics["acc.agreement_simulated"] = float((out.argmax(1) == sim.argmax(1)).float().mean())
            metrics["acc.sqnr_vs_simulated_db"] = accuracy.sqnr_db(sim, out)
        return metrics
