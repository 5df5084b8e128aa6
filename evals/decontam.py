"""Decontamination: word n-gram overlap between the training data and each eval question."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_WORD = re.compile(r"[a-z0-9]+")


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """Lowercase word n-grams of ``text``."""
    words = _WORD.findall(text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def question_text(doc: dict[str, Any]) -> str:
    """Everything of a question a model could have memorised: stem, options, reference."""
    parts = [str(doc.get("question", ""))]
    parts += [str(c) for c in doc.get("choices", [])]
    parts.append(str(doc.get("reference", "")))
    return "\n".join(parts)


def contaminated(train_texts: Iterable[str], docs: Iterable[dict[str, Any]], n: int = 13) -> dict[str, int]:
    """Ids of questions sharing at least one word n-gram with the training data -> shared n-gram count."""
    train: set[tuple[str, ...]] = set()
    for text in train_texts:
        train |= ngrams(text, n)
    out: dict[str, int] = {}
    for doc in docs:
        shared = len(ngrams(question_text(doc), n) & train)
        if shared:
            out[str(doc["id"])] = shared
    return out
