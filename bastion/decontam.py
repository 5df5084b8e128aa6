"""Decontamination: word n-gram overlap between training text and eval questions.

Shared by the eval (which excludes questions that overlap the training data) and synth (which drops
pairs that overlap an eval question), so that both sides apply the same test: lowercase
``[a-z0-9]+`` words, and an overlap is at least one shared word ``n``-gram.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from bastion.errors import MissingResourceError
from bastion.jsonl import read_jsonl
from bastion.paths import REPO_ROOT

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


def record_text(record: dict[str, Any]) -> str:
    """The text of an Alpaca training record that decontamination compares: instruction, input, output."""
    return f"{record['instruction']}\n{record.get('input', '')}\n{record['output']}"


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


class BankOverlap:
    """The n-grams of a set of eval questions, to test training texts against (the reverse direction of
    :func:`contaminated`, with the same words and n-grams: a text overlaps exactly when
    ``contaminated([text], docs, n)`` is not empty)."""

    def __init__(self, docs: Iterable[dict[str, Any]], n: int) -> None:
        self.n = n
        self.owner: dict[tuple[str, ...], str] = {}
        for doc in docs:
            for gram in ngrams(question_text(doc), n):
                self.owner.setdefault(gram, str(doc.get("id", "")))

    def __len__(self) -> int:
        return len(self.owner)

    def match(self, text: str) -> tuple[str, int] | None:
        """(id of the first overlapping question, shared n-grams) or None."""
        shared = [g for g in ngrams(text, self.n) if g in self.owner]
        if not shared:
            return None
        return self.owner[min(shared)], len(shared)


def read_bank(path: Path) -> Iterator[dict[str, Any]]:
    """The questions of one JSONL bank file."""
    if not path.is_file():
        raise MissingResourceError(f"eval bank {path} not found")
    for _, doc in read_jsonl(path):
        yield doc


#: The cloudsec tasks' own banks (``evals/tasks/cloudsec/bank/``); a test checks the eval finds them here too.
DEFAULT_BANKS_DIR = REPO_ROOT / "evals" / "tasks" / "cloudsec" / "bank"
BANK_KINDS = ("mcq", "open")


def eval_bank_files(eval_section: dict[str, Any], resolve: Any) -> list[Path]:
    """The bank files the recipe's eval reads: ``eval.banks.<kind>`` (through ``resolve``, the recipe's
    path resolver) where set, else the cloudsec tasks' own bank of that kind."""
    banks = eval_section.get("banks") or {}
    return [resolve(banks[k]) if banks.get(k) else DEFAULT_BANKS_DIR / f"{k}.jsonl" for k in BANK_KINDS]
