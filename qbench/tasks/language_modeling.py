"""``language_modeling``: perplexity of a causal LM on fixed token windows of held-out news text.

Data (``dataset=lee_corpus``): the Lee corpus tokenized by the model's own tokenizer and cut into
``task.options.seq_len``-token windows; calibration windows come from the first ``calibration_documents``
documents, evaluation windows from the documents after them (disjoint text). Metrics, token-weighted over the
evaluation windows: ``lm.perplexity`` (the task metric, lower is better), ``lm.fp32_perplexity``,
``lm.delta_perplexity_pct``; fidelity to FP32: ``lm.agreement`` (same next-token argmax) and ``lm.kl_to_fp32``
(mean KL(FP32 || deployed) per token, nats); on real backends the deployment gap: ``lm.perplexity_simulated``,
``lm.gap_perplexity_pct``, ``lm.agreement_simulated``. Logits are scored batch by batch (a window's logits are
seq_len x vocab floats: they are never all kept).

Workloads (batch 1): ``latency`` = one decoding step with a KV cache holding ``decode_context`` tokens (the cache
is cropped back after each step, so every call decodes at the same length: ``latency.*`` is the per-token decode
latency, tokens/s = 1000 / p50); ``prefill_128`` / ``prefill_512`` = the time to first token of a 128- / 512-token
prompt (a rate: ``prefill_N.p50_ms``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch

from qbench.tasks import LATENCY, THROUGHPUT, Task, Workload, first, register

if TYPE_CHECKING:
    from qbench.backends.deployment import Deployment
    from qbench.config import QBenchConfig
    from qbench.data import DataSplits
    from qbench.data.batching import NamedBatch, Outputs



@register
class LanguageModeling(Task):
    name = "language_modeling"
    metric = "lm.perplexity"
    higher_is_better = False
    delta_metric = "lm.delta_perplexity_pct"

    def splits(self, cfg: QBenchConfig, need_train: bool) -> DataSplits:
        from torch.utils.data import TensorDataset

        from qbench.config.inputs import InputContract, InputSpec
        from qbench.data import DataSplits
        from qbench.data.text import lee_documents
        from qbench.zoo.hf import load_tokenizer

        tokenizer = load_tokenizer(cfg.model)
        docs = lee_documents()
        cut = int(self.option("calibration_documents"))
        seq = int(self.option("seq_len"))

        def tokens(texts: list[str]) -> torch.Tensor:
            ids = tokenizer("\n\n".join(texts), add_special_tokens=False)["input_ids"]
            return torch.tensor(ids, dtype=torch.long)

        calibration, evaluation = tokens(docs[:cut]), tokens(docs[cut:])
        self.evaluation_tokens = evaluation

        def windows(ids: torch.Tensor, count: int, name: str) -> TensorDataset:
            available = len(ids) // seq
            if available < count:
                raise ValueError(f"task.options: {count} {name} windows of {seq} tokens need {count * seq} tokens; "
                                 f"the text has {len(ids)}")
            w = ids[: count * seq].reshape(count, seq)
            return TensorDataset(w, torch.zeros(count, dtype=torch.long))

        contract = InputContract((InputSpec("input_ids", (seq,), "int64", "zeros"),))
        return DataSplits(train=None,
                          calibration=windows(calibration, int(self.option("calibration_windows")), "calibration"),
                          evaluation=windows(evaluation, int(self.option("evaluation_windows")), "evaluation"),
                          num_classes=len(tokenizer), input_shape=(seq,), contract=contract,
                          notes={"data.calibration_tokens": float(len(calibration)),
                                 "data.evaluation_tokens": float(len(evaluation))})

    def workloads(self, cfg: QBenchConfig, splits: DataSplits) -> tuple[list[Workload], dict[str, str]]:
        text = self.evaluation_tokens
        context = int(self.option("decode_context"))
        prompt = {"input_ids": text[:context].unsqueeze(0)}
        workloads = [Workload(LATENCY, prompt, 1, LATENCY, call=_decode_call)]
        for length in self.option("prefill_lengths"):
            workloads.append(Workload(f"prefill_{length}", {"input_ids": text[:length].unsqueeze(0)}, 1, THROUGHPUT,
                                      call=_prefill_call))
        return workloads, {"latency.workload": f"decode 1 token, KV cache of {context}, batch 1",
                           "latency.batch_source": "task"}

    def evaluate(self, models: Mapping[str, Callable[[NamedBatch], Outputs]], splits: DataSplits,
                 batch_size: int) -> dict[str, float]:
        from qbench.data.batching import as_batch

        totals: dict[str, float] = {}

        def add(key: str, value: float) -> None:
            totals[key] = totals.get(key, 0.0) + value

        with torch.inference_mode():
            for ids, _ in splits.loader("evaluation", max(1, min(batch_size, 4))):
                inputs = splits.named(as_batch([ids]))
                outputs = {role: model(inputs) for role, model in models.items()}
                target = ids[:, 1:]
                add("tokens", float(target.numel()))
                logp = {role: torch.log_softmax(first(v).float()[:, :-1], dim=-1)
                        for role, v in outputs.items() if role != "simulated"}
                for role, lp in logp.items():
                    add(f"nll.{role}", float(-lp.gather(-1, target.unsqueeze(-1)).sum()))
                ref = logp["fp32"]
                out = logp["deployed"]
                add("agree", float((out.argmax(-1) == ref.argmax(-1)).sum()))
                add("kl", float((ref.exp() * (ref - out)).sum()))
                if "simulated" in outputs:  # logits, or their replay form (replayed from another cell)
                    simulated = self.replay_form(inputs, outputs["simulated"])
                    add("nll.simulated", float(-simulated["target_logp"].sum()))
                    add("agree_sim", float((out.argmax(-1) == simulated["argmax"]).sum()))
        n = totals["tokens"]
        ppl = {role[4:]: float(torch.exp(torch.tensor(v / n))) for role, v in totals.items() if role.startswith("nll.")}
        metrics = {"lm.perplexity": ppl["deployed"], "lm.fp32_perplexity": ppl["fp32"],
                   "lm.delta_perplexity_pct": 100.0 * (ppl["deployed"] / ppl["fp32"] - 1.0),
                   "lm.agreement": totals["agree"] / n, "lm.kl_to_fp32": totals["kl"] / n,
                   "lm.evaluation_tokens": n}
        if "simulated" in ppl:
            metrics["lm.perplexity_simulated"] = ppl["simulated"]
            metrics["lm.gap_perplexity_pct"] = 100.0 * (ppl["deployed"] / ppl["simulated"] - 1.0)
            metrics["lm.agreement_simulated"] = totals["agree_sim"] / n
        return metrics

    def replay_form(self, inputs: NamedBatch, outputs: Outputs) -> Outputs:
        """Each target token's log-probability and each position's argmax: what the deployment gap needs of the
        simulated model (32 KB for 16 x 256 tokens instead of 0.8 GB of logits)."""
        if "target_logp" in outputs:
            return outputs
        ids = inputs["input_ids"]
        logp = torch.log_softmax(first(outputs).float()[:, :-1], dim=-1)
        return {"target_logp": logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1), "argmax": logp.argmax(-1)}

    def score(self, ev: Any) -> dict[str, float]:  # evaluate() scores batch by batch instead
        raise NotImplementedError


def _causal_lm(deployment: Deployment) -> Any:
    runtime = deployment.runtime
    if not hasattr(runtime, "decode_step"):
        raise RuntimeError(f"decoding needs a torch CausalLM runtime; this deployment runs {type(runtime).__name__}")
    return runtime


def _decode_call(deployment: Deployment, inputs: NamedBatch) -> Callable[[], object]:
    """One decoding step after a prefilled prompt (the cache is filled once, outside the timing)."""
    model = _causal_lm(deployment)
    with torch.inference_mode():
        cache = model.prefill(inputs["input_ids"])
    token = inputs["input_ids"][:, -1:]

    @torch.inference_mode()
    def call() -> object:
        return model.decode_step(token, cache)

    return call


def _prefill_call(deployment: Deployment, inputs: NamedBatch) -> Callable[[], object]:
    model = _causal_lm(deployment)

    @torch.inference_mode()
    def call() -> object:
        return model.prefill(inputs["input_ids"])

    return call
