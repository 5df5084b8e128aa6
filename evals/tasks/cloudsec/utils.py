"""Loaders, prompts and scoring for the cloudsec lm-eval tasks.

The banks live next to this file (``bank/mcq.jsonl``, ``bank/open.jsonl``) and are found relative
to it, so the tasks work from any directory. Bring your own bank with
``--metadata '{"mcq_bank": "/path/mcq.jsonl", "open_bank": "/path/open.jsonl"}'`` (same format).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets
from rouge_score import rouge_scorer

BANK = Path(__file__).resolve().parent / "bank"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"  # option letters; a bank's question may have 2 to 26 options


def _load(default: str, override: str | None) -> datasets.DatasetDict:
    path = Path(override) if override else BANK / default
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def load_mcq(**kwargs: Any) -> datasets.DatasetDict:
    """The multiple-choice bank (``mcq_bank`` in --metadata overrides it)."""
    return _load("mcq.jsonl", kwargs.get("mcq_bank"))


def load_open(**kwargs: Any) -> datasets.DatasetDict:
    """The open-question bank (``open_bank`` in --metadata overrides it)."""
    return _load("open.jsonl", kwargs.get("open_bank"))


def mcq_choices(doc: dict[str, Any]) -> list[str]:
    """The letters of this question's options (A-D for four options, A-B for two ...)."""
    return list(LETTERS[: len(doc["choices"])])


def mcq_prompt(doc: dict[str, Any]) -> str:
    """Question, lettered options, then 'Answer:'."""
    options = "\n".join(f"{letter}. {choice}" for letter, choice in zip(mcq_choices(doc), doc["choices"], strict=True))
    return f"Question: {doc['question']}\n{options}\nAnswer with the letter of the correct option.\nAnswer:"


def mcq_target(doc: dict[str, Any]) -> int:
    """Index of the correct letter."""
    return LETTERS.index(doc["answer"])


def open_prompt(doc: dict[str, Any]) -> str:
    """The open design/review question as the user's turn."""
    return str(doc["question"])


def key_point_coverage(answer: str, key_points: list[dict[str, Any]]) -> float:
    """Share of key points with at least one of their keywords in the answer (case-insensitive)."""
    text = answer.lower()
    hits = sum(any(k.lower() in text for k in point["any_of"]) for point in key_points)
    return hits / len(key_points) if key_points else 0.0


_ROUGE = rouge_scorer.RougeScorer(["rougeL"])  # lowercase [a-z0-9]+ tokens, no stemming


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 (longest common subsequence) of ``rouge_score``."""
    return float(_ROUGE.score(reference, candidate)["rougeL"].fmeasure)


def score_open(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """lm-eval process_results: key-point coverage and ROUGE-L against the reference."""
    answer = results[0] if results else ""
    return {
        "key_point_coverage": key_point_coverage(answer, doc["key_points"]),
        "rouge_l": rouge_l(answer, doc["reference"]),
    }
