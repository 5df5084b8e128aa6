"""The shipped question banks pass the validator, and the validator catches what it must."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

from conftest import REPO

from evals.bank import BANK_DIR, CATEGORIES, load_jsonl, validate_mcq, validate_open


def test_mcq_bank_is_valid_and_large_enough() -> None:
    rows = load_jsonl(BANK_DIR / "mcq.jsonl")
    problems, stats = validate_mcq(rows, strict=True)
    assert problems == []
    assert stats["questions"] >= 200
    assert set(stats["categories"]) == set(CATEGORIES)
    assert max(stats["answers"].values()) - min(stats["answers"].values()) <= 2
    assert stats["correct_is_longest_share"] <= 0.3


def test_open_bank_is_valid_and_large_enough() -> None:
    rows = load_jsonl(BANK_DIR / "open.jsonl")
    problems, stats = validate_open(rows, strict=True)
    assert problems == [] and stats["questions"] >= 50 and set(stats["categories"]) == set(CATEGORIES)


def test_validator_catches_duplicates_imbalance_and_giveaways() -> None:
    rows = load_jsonl(BANK_DIR / "mcq.jsonl")[:40]
    bad = copy.deepcopy(rows)
    bad.append(dict(bad[0]))  # duplicate id and question
    for r in bad[:20]:
        r["answer"] = "A"
    bad[1]["choices"] = ["A. x", "B. y", "C. z", "D. none of the above"]
    problems, _ = validate_mcq(bad, strict=True)
    text = "\n".join(problems)
    assert f"{rows[0]['id']}: id used 2 times" in text
    assert "near-duplicate" in text and "not balanced" in text
    assert "letter prefixes" in text and "all/none of the above" in text


def test_bank_cli_exit_code(tmp_path) -> None:
    ok = subprocess.run([sys.executable, "-m", "evals.bank", "--strict"], cwd=REPO, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout
    broken = tmp_path / "mcq.jsonl"
    row = json.loads((BANK_DIR / "mcq.jsonl").read_text().splitlines()[0])
    row.pop("answer")
    broken.write_text(json.dumps(row) + "\n")
    bad = subprocess.run(
        [sys.executable, "-m", "evals.bank", str(broken), str(BANK_DIR / "open.jsonl")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "missing key answer" in bad.stdout
