"""The question banks: load and validate (schema, unique ids, answer balance, duplicates, giveaways)."""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BANK_DIR = Path(__file__).resolve().parent / "tasks" / "cloudsec" / "bank"
CATEGORIES = (
    "aws",
    "azure",
    "gcp",
    "kubernetes",
    "iam",
    "compliance",
    "threat_modelling",
    "iac",
    "data_protection",
    "network",
    "logging_ir",
)
MCQ_KEYS = {"id", "category", "difficulty", "question", "choices", "answer", "rationale"}
OPEN_KEYS = {"id", "category", "difficulty", "question", "reference", "key_points", "rationale"}
_WORDS = re.compile(r"[a-z0-9]+")


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a bad line names the file and line."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
    return rows


def _shingles(text: str) -> set[tuple[str, ...]]:
    words = _WORDS.findall(text.lower())
    return {tuple(words[i : i + 3]) for i in range(max(1, len(words) - 2))}


def _near_duplicates(rows: list[dict[str, Any]], threshold: float = 0.7) -> list[tuple[str, str]]:
    sh = [(r["id"], _shingles(r["question"])) for r in rows]
    pairs = []
    for i, (a, sa) in enumerate(sh):
        for b, sb in sh[i + 1 :]:
            if sa and sb and len(sa & sb) / len(sa | sb) >= threshold:
                pairs.append((a, b))
    return pairs


def _well_formed(
    rows: list[dict[str, Any]], keys: set[str], problems: list[str]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(id, row)`` for the rows with exactly ``keys``; a row with other keys, or an unknown
    category, is reported in ``problems`` (a row with other keys is not checked further)."""
    for r in rows:
        rid = r.get("id", "?")
        if set(r) != keys:
            problems.append(f"{rid}: keys {sorted(set(r))}, expected {sorted(keys)}")
            continue
        if r["category"] not in CATEGORIES:
            problems.append(f"{rid}: category '{r['category']}' not one of {', '.join(CATEGORIES)}")
        yield rid, r


def _bank_problems(rows: list[dict[str, Any]]) -> list[str]:
    """Ids used more than once and near-duplicate questions."""
    ids = Counter(r.get("id") for r in rows)
    problems = [f"{i}: id used {n} times" for i, n in ids.items() if n > 1]
    return problems + [f"{a} and {b}: near-duplicate questions" for a, b in _near_duplicates(rows)]


def validate_mcq(rows: list[dict[str, Any]]) -> tuple[list[str], dict[str, Any]]:
    """Problems in a multiple-choice bank, and its statistics."""
    problems: list[str] = []
    for rid, r in _well_formed(rows, MCQ_KEYS, problems):
        if r["difficulty"] not in ("easy", "medium", "hard"):
            problems.append(f"{rid}: difficulty '{r['difficulty']}'")
        if r["answer"] not in ("A", "B", "C", "D"):
            problems.append(f"{rid}: answer '{r['answer']}'")
        choices = r["choices"]
        if len(choices) != 4 or len({c.strip().lower() for c in choices}) != 4:
            problems.append(f"{rid}: needs four distinct choices")
        if any(re.match(r"^[A-D][.)]\s", c) for c in choices):
            problems.append(f"{rid}: choices must not carry letter prefixes")
        if any("all of the above" in c.lower() or "none of the above" in c.lower() for c in choices):
            problems.append(f"{rid}: 'all/none of the above' options are not allowed")
        if len(r["rationale"]) < 20:
            problems.append(f"{rid}: rationale too short")
    problems += _bank_problems(rows)
    answers = Counter(r.get("answer") for r in rows)
    expected = len(rows) / 4
    if rows and any(abs(answers.get(k, 0) - expected) > max(2, 0.05 * len(rows)) for k in "ABCD"):
        problems.append(f"answers not balanced over A-D: {dict(sorted(answers.items()))}")
    longest = sum(_strictly_longest(r) for r in rows if set(r) == MCQ_KEYS)
    share = longest / len(rows) if rows else 0.0
    if share > 0.35:
        problems.append(f"the correct option is the strictly longest in {share:.0%} of questions (a giveaway)")
    stats = {
        "questions": len(rows),
        "answers": dict(sorted(answers.items())),
        "categories": dict(sorted(Counter(r.get("category") for r in rows).items())),
        "difficulty": dict(sorted(Counter(r.get("difficulty") for r in rows).items())),
        "correct_is_longest_share": round(share, 3),
    }
    return problems, stats


def _strictly_longest(r: dict[str, Any]) -> bool:
    lengths = [len(c) for c in r["choices"]]
    i = "ABCD".index(r["answer"]) if r["answer"] in "ABCD" else 0
    return lengths[i] > max(lengths[:i] + lengths[i + 1 :])


def validate_open(rows: list[dict[str, Any]]) -> tuple[list[str], dict[str, Any]]:
    """Problems in an open-question bank, and its statistics."""
    problems: list[str] = []
    for rid, r in _well_formed(rows, OPEN_KEYS, problems):
        points = r["key_points"]
        if not 3 <= len(points) <= 6:
            problems.append(f"{rid}: {len(points)} key points, expected 3-6")
        reference = r["reference"].lower()
        for p in points:
            if not p.get("any_of") or not any(k.lower() in reference for k in p["any_of"]):
                problems.append(f"{rid}: key point '{p.get('point')}' has no keyword found in the reference")
    problems += _bank_problems(rows)
    stats = {"questions": len(rows), "categories": dict(sorted(Counter(r.get("category") for r in rows).items()))}
    return problems, stats


def main() -> None:
    """``python -m evals.bank [MCQ.jsonl OPEN.jsonl]``: validate the banks, exit 2 on problems."""
    mcq = Path(sys.argv[1]) if len(sys.argv) > 1 else BANK_DIR / "mcq.jsonl"
    open_ = Path(sys.argv[2]) if len(sys.argv) > 2 else BANK_DIR / "open.jsonl"
    bad = False
    for path, check in ((mcq, validate_mcq), (open_, validate_open)):
        problems, stats = check(load_jsonl(path))
        sys.stdout.write(f"{path}: {json.dumps(stats)}\n")
        for p in problems:
            sys.stdout.write(f"  problem: {p}\n")
        bad = bad or bool(problems)
    raise SystemExit(2 if bad else 0)


if __name__ == "__main__":
    main()
