"""English text for the embedded base model: the standard library's docstrings and ``pydoc_data`` topics.

Every machine with the same Python has exactly this text, so the corpus (and the model trained on
it) is reproducible offline. Docstrings are read with ``ast`` (no module is imported), split into
paragraphs, cleaned of code and tables, and de-duplicated. The held-out split is fixed by a hash of
each paragraph, so it never depends on file order. ``--corpus PATH`` (text files) and ``--dataset
NAME`` (a ``datasets`` corpus) replace the default source.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import sysconfig
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

from omlkit.errors import CorpusError
from omlkit.io import atomic_write_text
from omlkit.paths import omlkit_home

Split = Literal["train", "heldout"]
HELDOUT_EVERY = 20  # one paragraph in 20 is held out
MIN_CHARS = 40
TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")
_SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idlelib", "turtledemo", "lib2to3"}
_WS = re.compile(r"\s+")
_CODEY = re.compile(
    r"(>>>|\.\.\. |::\s*$|^\s*[-=*~^]{3,}\s*$|[{}\[\]]{2}|\b(def|class|import|return)\s)", re.M
)


def clean_paragraph(text: str) -> str | None:
    """One normalised prose paragraph, or None when the text is code, a table, or too short."""
    if _CODEY.search(text):
        return None
    lines = [ln.strip() for ln in text.strip().splitlines()]
    if any(ln.startswith(("|", "+--", ":param", ":type", ":return", "@")) for ln in lines):
        return None
    flat = _WS.sub(" ", " ".join(lines)).strip()
    if len(flat) < MIN_CHARS or " " not in flat:
        return None
    letters = sum(c.isalpha() or c == " " for c in flat)
    if letters / len(flat) < 0.85 or not flat[0].isalnum():
        return None
    return flat


def split_paragraphs(text: str) -> Iterator[str]:
    """Cleaned paragraphs of ``text`` (blank-line separated)."""
    for block in re.split(r"\n\s*\n", text):
        para = clean_paragraph(block)
        if para:
            yield para


def _stdlib_docstrings() -> Iterator[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if not _SKIP_DIRS.intersection(p.relative_to(root).parts))
    for path in files:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc:
                    yield doc


def _pydoc_topics() -> Iterator[str]:
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield topics[name]


def stdlib_texts() -> Iterator[str]:
    """Raw documents of the default corpus, in a fixed order."""
    yield from _stdlib_docstrings()
    yield from _pydoc_topics()


def file_texts(path: str | Path) -> Iterator[str]:
    """Raw documents from a text file or every text file under a folder (sorted)."""
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"corpus path {path} does not exist")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in TEXT_SUFFIXES)
    for f in files:
        try:
            yield f.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue


def dataset_texts(name: str, split: str = "train", text_field: str = "text") -> Iterator[str]:
    """Raw documents from ``datasets.load_dataset(name)``; CorpusError when it cannot be reached."""
    import datasets

    from omlkit.hub import hub_reachable, offline_requested

    if not Path(name).exists() and not offline_requested() and not hub_reachable():
        raise CorpusError(f"dataset {name!r} is not available offline (the Hugging Face Hub cannot be "
                          "reached; set HF_HUB_OFFLINE=1 to use a locally cached copy)")
    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CorpusError(f"dataset {name!r} could not be loaded: {first}") from None
    if text_field not in ds.column_names:
        raise CorpusError(f"dataset {name!r} has no column {text_field!r} (columns: {ds.column_names})")
    for row in ds:
        yield row[text_field]


def build_paragraphs(texts: Iterable[str]) -> list[str]:
    """Clean and de-duplicate paragraphs, keeping first occurrence order."""
    seen: set[str] = set()
    out: list[str] = []
    for doc in texts:
        for para in split_paragraphs(doc):
            if para not in seen:
                seen.add(para)
                out.append(para)
    return out


def is_heldout(paragraph: str) -> bool:
    """Whether a paragraph belongs to the fixed held-out split (by content hash)."""
    return int(hashlib.sha256(paragraph.encode()).hexdigest()[:8], 16) % HELDOUT_EVERY == 0


def split_corpus(paragraphs: list[str]) -> dict[str, list[str]]:
    """``{"train": [...], "heldout": [...]}`` by :func:`is_heldout`."""
    out: dict[str, list[str]] = {"train": [], "heldout": []}
    for p in paragraphs:
        out["heldout" if is_heldout(p) else "train"].append(p)
    return out


def load_corpus(corpus: str | Path | None = None, dataset: str | None = None) -> dict[str, list[str]]:
    """The split corpus from a path, a dataset, or (neither) the stdlib default; refuses an empty one."""
    if corpus and dataset:
        raise CorpusError("give either a corpus path or a dataset name, not both")
    if dataset:
        texts, source = dataset_texts(dataset), f"dataset {dataset!r}"
    elif corpus:
        texts, source = file_texts(corpus), f"corpus path {corpus}"
    else:
        texts, source = stdlib_texts(), "the standard library"
    splits = split_corpus(build_paragraphs(texts))
    if len(splits["train"]) < 2 or not splits["heldout"]:
        n = len(splits["train"]) + len(splits["heldout"])
        raise CorpusError(f"{source} has no usable English text ({n} prose paragraphs found; need more)")
    return splits


def corpus_sha(splits: dict[str, list[str]]) -> str:
    """Content hash of a split corpus (16 hex chars)."""
    h = hashlib.sha256()
    for name in ("train", "heldout"):
        for p in splits[name]:
            h.update(name.encode() + b"\0" + p.encode() + b"\n")
    return h.hexdigest()[:16]


def _cache_path() -> Path:
    import sys

    return omlkit_home() / "corpus" / f"stdlib-py{sys.version_info.major}.{sys.version_info.minor}.json"


def default_corpus() -> dict[str, list[str]]:
    """The stdlib corpus, cached as JSON under ``$OMLKIT_HOME/corpus``."""
    path = _cache_path()
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    splits = load_corpus()
    atomic_write_text(path, json.dumps(splits))
    return splits


def corpus_split(split: Split = "train") -> list[str]:
    """English paragraphs of the default corpus's ``train`` or fixed ``heldout`` split."""
    if split not in ("train", "heldout"):
        raise CorpusError(f"unknown split {split!r} (expected 'train' or 'heldout')")
    return default_corpus()[split]
