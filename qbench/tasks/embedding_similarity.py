"""``embedding_similarity``: how well a sentence encoder's embeddings rank word pairs as humans do.

Data (``dataset=word_similarity``): WordSim353 and SimLex-999 (gensim's copies); every distinct word is
embedded once (``task.options.max_tokens`` tokens, padded), in batches of ``eval_batch_size`` words, or one word
per call (``dynamic_eval_batch_size``) when the scheme quantizes activations dynamically (its range is per call).
Calibration: sentences of the Lee news corpus (other text than the evaluation words), same token length.

Metrics: Spearman ρ between the cosine of each pair's embeddings and the human score, per set
(``sim.spearman_wordsim353``, ``sim.spearman_simlex999``) and their mean ``sim.spearman`` (the task metric,
higher is better); ``sim.fp32_spearman`` and ``sim.delta_spearman`` (ρ − ρ_FP32, mean of the sets; per set
``sim.delta_spearman_<set>``); fidelity: ``sim.cosine_to_fp32_mean`` / ``_min`` (each word's embedding vs its
FP32 embedding); on real backends the deployment gap ``sim.spearman_simulated``, ``sim.gap_spearman`` and
``sim.cosine_to_simulated_min``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import pandas as pd
import torch

from qbench.tasks import Evaluation, Task, collect, first, register

if TYPE_CHECKING:
    from qbench.config import QBenchConfig
    from qbench.data import DataSplits
    from qbench.data.batching import NamedBatch, Outputs



@register
class EmbeddingSimilarity(Task):
    name = "embedding_similarity"
    metric = "sim.spearman"
    higher_is_better = True
    delta_metric = "sim.delta_spearman"
    subsettable = False  # the word pairs index every word of the split
    dynamic_activations = False  # set by splits() from the cell's scheme

    def evaluate(self, models: Mapping[str, Callable[[NamedBatch], Outputs]], splits: DataSplits,
                 batch_size: int) -> dict[str, float]:
        # dynamic quantization takes its activation range per call: a batch of many texts would share one range, so
        # those schemes embed one text per call, as an embedding service runs (conf/task/embedding_similarity.yaml)
        key = "dynamic_eval_batch_size" if self.dynamic_activations else "eval_batch_size"
        return self.score(collect(models, splits, int(self.option(key))))

    def splits(self, cfg: QBenchConfig, need_train: bool) -> DataSplits:
        from torch.utils.data import TensorDataset

        from qbench.config.inputs import InputContract, InputSpec
        from qbench.data import DataSplits
        from qbench.data.text import lee_documents, word_pairs
        from qbench.zoo.hf import load_tokenizer

        self.dynamic_activations = cfg.quant.method == "dynamic"
        tokenizer = load_tokenizer(cfg.model)
        length = int(self.option("max_tokens"))
        self.pairs = {name: word_pairs(name) for name in self.option("sets")}
        words = sorted({w for pairs in self.pairs.values() for a, b, _ in pairs for w in (a, b)})
        self.index = {w: i for i, w in enumerate(words)}
        sentences = [s.strip() for doc in lee_documents() for s in doc.split(". ") if len(s.split()) >= 5]
        sentences = sentences[: int(self.option("calibration_sentences"))]

        def encode(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
            enc = tokenizer(texts, padding="max_length", truncation=True, max_length=length, return_tensors="pt")
            return enc["input_ids"], enc["attention_mask"]

        contract = InputContract((InputSpec("input_ids", (length,), "int64", "zeros"),
                                  InputSpec("attention_mask", (length,), "int64", "ones")))
        eval_ids, eval_mask = encode(words)
        cal_ids, cal_mask = encode(sentences)
        return DataSplits(train=None,
                          calibration=TensorDataset(cal_ids, cal_mask, torch.zeros(len(sentences), dtype=torch.long)),
                          evaluation=TensorDataset(eval_ids, eval_mask, torch.arange(len(words))),
                          num_classes=len(words), input_shape=(length,), contract=contract,
                          notes={"data.words": float(len(words)),
                                 **{f"data.pairs_{k}": float(len(v)) for k, v in self.pairs.items()}})

    def _spearman(self, embeddings: torch.Tensor) -> dict[str, float]:
        out = {}
        for name, pairs in self.pairs.items():
            a = embeddings[[self.index[p[0]] for p in pairs]]
            b = embeddings[[self.index[p[1]] for p in pairs]]
            cosine = torch.nn.functional.cosine_similarity(a, b, dim=-1).double().numpy()
            out[name] = float(pd.Series(cosine).corr(pd.Series([p[2] for p in pairs]), method="spearman"))
        return out

    def score(self, ev: Evaluation) -> dict[str, float]:
        assert ev.targets is not None  # the words' indices, in evaluation order
        order = torch.argsort(ev.targets)
        deployed, fp32 = first(ev.deployed)[order].float(), first(ev.fp32)[order].float()
        rho, rho_fp32 = self._spearman(deployed), self._spearman(fp32)
        metrics = {f"sim.spearman_{k}": v for k, v in rho.items()}
        metrics.update({f"sim.delta_spearman_{k}": rho[k] - rho_fp32[k] for k in rho})
        metrics["sim.spearman"] = sum(rho.values()) / len(rho)
        metrics["sim.fp32_spearman"] = sum(rho_fp32.values()) / len(rho_fp32)
        metrics["sim.delta_spearman"] = metrics["sim.spearman"] - metrics["sim.fp32_spearman"]
        cosine = torch.nn.functional.cosine_similarity(deployed, fp32, dim=-1)
        metrics["sim.cosine_to_fp32_mean"] = float(cosine.mean())
        metrics["sim.cosine_to_fp32_min"] = float(cosine.min())
        if ev.simulated is not None:
            simulated = first(ev.simulated)[order].float()
            rho_sim = self._spearman(simulated)
            metrics["sim.spearman_simulated"] = sum(rho_sim.values()) / len(rho_sim)
            metrics["sim.gap_spearman"] = metrics["sim.spearman"] - metrics["sim.spearman_simulated"]
            metrics["sim.cosine_to_simulated_min"] = float(
                torch.nn.functional.cosine_similarity(deployed, simulated, dim=-1).min())
        return metrics
