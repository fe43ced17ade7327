"""Text that ships with installed packages, read in place (nothing is downloaded).

gensim's test data (``gensim/test/test_data``): the Lee news corpus (``lee_background.cor``: 300 documents, one
per line) for language modeling, and two word-similarity sets with human scores — WordSim353 (353 pairs, 0-10)
and SimLex-999 (999 pairs, 0-10). The package is located without importing it (gensim imports scipy).
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

WORD_SIMILARITY_SETS = {"wordsim353": "wordsim353.tsv", "simlex999": "simlex999.txt"}
LEE_CORPUS = "lee_background.cor"


class TextDataUnavailable(Exception):
    """The package holding the text is not installed (one line naming it)."""


def gensim_data_dir() -> Path:
    spec = find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise TextDataUnavailable("the text datasets are read from the gensim package, which is not installed: "
                                  "pip install 'gensim==4.4.0' (or pip install 'qbench[text]')")
    return Path(next(iter(spec.submodule_search_locations))) / "test" / "test_data"


def check_text_dataset(name: str) -> str | None:
    """Why the text dataset ``name`` cannot be read here, or None."""
    try:
        folder = gensim_data_dir()
    except TextDataUnavailable as exc:
        return str(exc)
    files = [LEE_CORPUS] if name == "lee_corpus" else list(WORD_SIMILARITY_SETS.values())
    missing = [f for f in files if not (folder / f).is_file()]
    return f"{', '.join(missing)} not found in {folder} (gensim 4.4.0 ships them)" if missing else None


def lee_documents() -> list[str]:
    """The Lee background corpus, one news document per entry, in file order."""
    text = (gensim_data_dir() / LEE_CORPUS).read_text(encoding="utf-8", errors="replace")
    return [line.strip() for line in text.splitlines() if line.strip()]


def word_pairs(set_name: str) -> list[tuple[str, str, float]]:
    """(word, word, human score) of a word-similarity set, in file order (comment lines skipped)."""
    path = gensim_data_dir() / WORD_SIMILARITY_SETS[set_name]
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        first, second, score = line.split("\t")[:3]
        pairs.append((first.strip(), second.strip(), float(score)))
    return pairs
