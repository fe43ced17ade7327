"""Local transformers models (``model=hf``): a folder with ``config.json`` + weights, or a GGUF file in a folder
(``model.gguf_file``, dequantized to float by transformers). Never downloads: every load is ``local_files_only``.

``model.path`` may be ``pkg:PACKAGE/SUB``: a folder inside an installed Python package (the presets
``model=minilm`` and ``model=smollm2`` ship as packages), found without importing the package.

The loaded model is wrapped so that it maps named token inputs to one named output, like every qbench model:
an encoder (:class:`TextEncoder`) returns one pooled, L2-normalised embedding per text; a causal language model
(:class:`CausalLM`) returns next-token logits, and keeps the transformers model reachable for decoding with a KV
cache (:meth:`CausalLM.decode_step`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger("qbench.zoo")

ENCODER, CAUSAL_LM = "encoder", "causal_lm"


class ModelFolderError(ValueError):
    """A model folder or GGUF file is absent or not a transformers model (one line)."""


def resolve_path(path: str | None) -> Path:
    """``model.path`` as a folder: ``pkg:PACKAGE/SUB`` is looked up among installed packages."""
    if not path:
        raise ModelFolderError("model.path is required for model=hf (a local transformers folder)")
    if not path.startswith("pkg:"):
        return Path(path).expanduser()
    package, _, sub = path[4:].partition("/")
    spec = find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        dist = package.replace("_", "-")
        raise ModelFolderError(f"model.path={path}: the package {package} is not installed (pip install {dist}, "
                               "or pip install 'qbench[text]')")
    return Path(next(iter(spec.submodule_search_locations))) / sub


def model_kind(cfg: Any) -> str:
    """``causal_lm`` or ``encoder``, from the folder's config.json (a GGUF file holds a language model)."""
    folder = resolve_path(cfg.path)
    if cfg.gguf_file:
        return CAUSAL_LM
    architectures = json.loads((folder / "config.json").read_text()).get("architectures") or []
    return CAUSAL_LM if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures) else ENCODER


def check_hf_model(cfg: Any) -> str | None:
    """Why ``cfg`` (a ModelConfig with source hf) cannot be loaded here, or None. Reads file names only."""
    try:
        folder = resolve_path(cfg.path)
    except ModelFolderError as exc:
        return str(exc)
    if not folder.is_dir():
        return f"model.path={cfg.path}: no such folder (a local transformers model: config.json + weights)"
    if find_spec("transformers") is None:
        return "model=hf needs the transformers package: pip install 'qbench[text]'"
    if cfg.gguf_file:
        if not (folder / cfg.gguf_file).is_file():
            present = ", ".join(sorted(p.name for p in folder.glob("*.gguf"))) or "none"
            return f"model.gguf_file={cfg.gguf_file}: not in {folder} (GGUF files there: {present})"
        if find_spec("gguf") is None:
            return "model.gguf_file needs the gguf package: pip install 'qbench[text]'"
        return None
    if not (folder / "config.json").is_file():
        return (f"model.path={cfg.path}: not a transformers model folder (no config.json in {folder}); "
                "for a GGUF file set model.gguf_file")
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        return f"model.path={cfg.path}: no weights in {folder} (*.safetensors or *.bin)"
    return None


def task_fit_reason(dataset_cfg: Any, model_cfg: Any) -> str | None:
    """Why the text task of ``dataset_cfg`` cannot run on this transformers model (word similarity needs an
    encoder's pooled embeddings, perplexity a causal LM's next-token head), or None. Reads config.json only."""
    if model_cfg.source != "hf":
        return None
    kind = model_kind(model_cfg)
    if dataset_cfg.name == "word_similarity" and kind == CAUSAL_LM:
        return (f"task embedding_similarity needs a sentence encoder (a model whose token embeddings are pooled); "
                f"model={model_cfg.name} is a causal language model: use task=language_modeling "
                "dataset=lee_corpus, or an encoder folder")
    if dataset_cfg.name == "lee_corpus" and kind != CAUSAL_LM:
        return (f"task language_modeling needs a causal language model; model={model_cfg.name} is an encoder "
                "(no next-token head): use task=embedding_similarity dataset=word_similarity")
    return None


def _gguf_cache(cfg: Any, what: str, build: Callable[[], Any]) -> Any:
    """``build()`` once per GGUF file (dequantizing 135 M parameters takes ~10 s, reading its tokenizer ~4 s):
    pickled under QBENCH_CACHE, keyed by the file (path, size, mtime) and the transformers/torch versions."""
    import hashlib

    import transformers

    from qbench.config.paths import cache_dir
    from qbench.storage import cached

    path = (resolve_path(cfg.path) / cfg.gguf_file).resolve()
    stat = path.stat()
    key = hashlib.sha256(f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{transformers.__version__}|"
                         f"{torch.__version__}|{what}".encode()).hexdigest()[:16]
    target = cache_dir() / "hf" / f"{path.stem}-{what}-{key}.pt"
    target.parent.mkdir(parents=True, exist_ok=True)
    value, _ = cached(target, build, lambda v, p: torch.save(v, p), lambda p: torch.load(p, weights_only=False),
                      suffix=".pt")
    return value


def load_tokenizer(cfg: Any) -> Any:
    from transformers import AutoTokenizer

    folder = resolve_path(cfg.path)
    if cfg.gguf_file:
        return _gguf_cache(cfg, "tokenizer", lambda: AutoTokenizer.from_pretrained(
            str(folder), local_files_only=True, gguf_file=cfg.gguf_file))
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


class TextEncoder(nn.Module):
    """A transformers encoder + pooling: ``(input_ids, attention_mask) -> embedding`` [batch, dim], L2-normalised
    (what sentence-transformers' all-MiniLM-L6-v2 computes: mean over real tokens, then normalise)."""

    def __init__(self, model: nn.Module, pooling: str) -> None:
        super().__init__()
        self.model = model
        self.pooling = pooling

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return nn.functional.normalize(pooled, dim=-1)


class CausalLM(nn.Module):
    """A transformers causal LM: ``input_ids -> logits`` [batch, tokens, vocab] (no cache), and one decoding step
    with a KV cache for the decode latency (:meth:`prefill`, :meth:`decode_step`)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, use_cache=False).logits

    def prefill(self, input_ids: torch.Tensor) -> Any:
        """The KV cache after the prompt ``input_ids``."""
        return self.model(input_ids=input_ids, use_cache=True).past_key_values

    def decode_step(self, token: torch.Tensor, cache: Any) -> torch.Tensor:
        """Logits of one next token given the cache; the cache is cropped back afterwards, so every call decodes
        at the same context length."""
        length = cache.get_seq_length()
        logits = self.model(input_ids=token, past_key_values=cache, use_cache=True).logits
        cache.crop(length - cache.get_seq_length())  # transformers 5: a negative count of tokens to drop
        return logits


def load_hf(cfg: Any) -> tuple[nn.Module, dict[str, Any]]:
    """The wrapped FP32 model of ``cfg`` and facts for tags (kind, parameters, source precision)."""
    reason = check_hf_model(cfg)
    if reason:
        raise ModelFolderError(reason)
    import transformers

    folder = str(resolve_path(cfg.path))
    kind = model_kind(cfg)
    common: dict[str, Any] = {"local_files_only": True, "dtype": torch.float32}
    if cfg.gguf_file:
        common["gguf_file"] = cfg.gguf_file
    transformers.logging.set_verbosity_error()  # progress bars of GGUF dequantization: noise in a cell's log
    if kind == CAUSAL_LM and cfg.gguf_file:
        wrapped: nn.Module = CausalLM(_gguf_cache(cfg, "float32", lambda: transformers.AutoModelForCausalLM
                                                  .from_pretrained(folder, **common).eval()))
    elif kind == CAUSAL_LM:
        wrapped = CausalLM(transformers.AutoModelForCausalLM.from_pretrained(folder, **common).eval())
    else:
        wrapped = TextEncoder(transformers.AutoModel.from_pretrained(folder, **common).eval(), cfg.pooling)
    meta = {"kind": kind, "parameters": sum(p.numel() for p in wrapped.parameters()),
            "source_precision": gguf_precision(Path(folder) / cfg.gguf_file) if cfg.gguf_file else "float"}
    return wrapped.eval(), meta


def gguf_precision(path: Path) -> str:
    """The quantization type most of a GGUF file's weights are stored in (e.g. Q4_1): re-quantizing to that same
    grid is nearly free, so it is recorded with every cell of such a model."""
    from collections import Counter

    from gguf import GGUFReader

    types = Counter(t.tensor_type.name for t in GGUFReader(str(path)).tensors if len(t.shape) > 1)
    return f"gguf:{types.most_common(1)[0][0]}" if types else "gguf"
