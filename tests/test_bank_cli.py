"""Bring-your-own banks: ``python -m evals.bank`` and the general rules vs Bastion's authoring rules."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

from evals.bank import BANK_DIR, BankFileError, check_bank, load_jsonl, validate_mcq, validate_open

# a published-benchmark style bank: its own categories and keys, no rationale, "All of the above",
# every answer 'A' and the correct option the longest: valid for the tasks, not Bastion's style
PUBLISHED = [
    {
        "id": f"pub-{i}",
        "subject": "networking",
        "category": "networking",
        "question": f"Published question number {i} about {topic}?",
        "choices": [f"The correct and rather long answer about {topic}", "No", "Maybe", "All of the above"],
        "answer": "A",
    }
    for i, topic in enumerate(["subnets", "routing", "firewalls", "VPNs", "DNS", "TLS", "proxies", "NAT"])
]
OPEN_ROW = {
    "id": "o-1",
    "question": "How do you protect an API key?",
    "reference": "Keep it in a secrets manager and rotate it.",
    "key_points": [{"point": "secrets manager", "any_of": ["secrets manager", "vault"]}],
}


def bank(tmp_path: Path, rows: list[Any], name: str = "mcq.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evals.bank", *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )


def test_help() -> None:
    proc = cli("--help")
    assert proc.returncode == 0
    assert "--mcq" in proc.stdout and "--open" in proc.stdout and "--strict" in proc.stdout
    assert "README.md" in proc.stdout and "Traceback" not in proc.stderr


def test_a_published_benchmark_passes_unmodified_but_not_strict(tmp_path: Path) -> None:
    path = bank(tmp_path, PUBLISHED)
    proc = cli(str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "8 multiple-choice questions" in proc.stdout and "valid" in proc.stdout
    strict = cli("--strict", str(path))
    assert strict.returncode == 2
    for reason in (
        "unexpected subject",
        'category "networking"',
        "all/none of the above",
        "not balanced",
        "longest",
        "rationale",
    ):
        assert reason in strict.stdout, reason
    assert validate_mcq(PUBLISHED)[0] == []


def test_the_shipped_banks_pass_strict() -> None:
    proc = cli("--strict")
    assert proc.returncode == 0, proc.stdout
    assert "mcq.jsonl" in proc.stdout and "open.jsonl" in proc.stdout


def test_one_or_both_banks_by_flag_or_position(tmp_path: Path) -> None:
    mcq, opn = bank(tmp_path, PUBLISHED), bank(tmp_path, [OPEN_ROW], "open.jsonl")
    only_open = cli("--open", str(opn))
    assert only_open.returncode == 0 and "1 open questions" in only_open.stdout and "mcq" not in only_open.stdout
    both = cli(str(mcq), str(opn))
    assert both.returncode == 0 and both.stdout.count("valid") == 2
    flags = cli("--mcq", str(mcq), "--open", str(opn))
    assert flags.stdout == both.stdout
    clash = cli(str(mcq), "--mcq", str(mcq))
    assert clash.returncode == 2 and "Traceback" not in clash.stderr
    too_many = cli(str(mcq), str(opn), str(opn))
    assert too_many.returncode == 2 and "at most two" in too_many.stderr


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "no such file"),
        (b"", "empty"),
        (b"\xe9t\xe9\n", "not UTF-8"),
        (b'{"id": 1,\n', ":1: not valid JSON"),
        (b'{"id": "a", "question": "q", "choices": ["x", "y"], "answer": "A"}\n[1, 2]\n', ":2: expected a JSON object"),
        (b"[" * 100_000 + b"]" * 100_000 + b"\n", "not valid JSON"),
    ],
    ids=["missing", "empty", "latin-1", "bad-json", "not-an-object", "deep-nesting"],
)
def test_a_missing_or_broken_file_exits_2_without_traceback(tmp_path: Path, content: bytes | None, needle: str) -> None:
    path = tmp_path / "mcq.jsonl"
    if content is not None:
        path.write_bytes(content)
    proc = cli(str(path))
    assert proc.returncode == 2
    assert needle in proc.stderr and str(path) in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    with pytest.raises(BankFileError, match=needle):
        load_jsonl(path)


def test_a_folder_is_not_a_bank(tmp_path: Path) -> None:
    proc = cli("--open", str(tmp_path))
    assert proc.returncode == 2 and "a folder" in proc.stderr


def test_general_rules() -> None:
    rows = [
        {"id": "a", "question": "q1", "choices": ["x", "y"], "answer": "B"},
        {"id": "a", "question": "q2", "choices": ["x"], "answer": "A"},
        {"id": "c", "question": " ", "choices": ["x", "y", "z"], "answer": "D"},
        {"id": "d", "question": "q4", "choices": ["x", ""], "answer": 0},
        {"question": "q5", "choices": "x,y", "answer": "A"},
        {"id": 6, "question": "q6", "choices": ["x", "y"], "answer": "A", "category": 3},
    ]
    problems = "\n".join(validate_mcq(rows)[0])
    assert "a: id used 2 times" in problems
    assert "a: choices is 1 choice(s), expected a list of two or more options" in problems
    assert "c: question is blank, expected non-empty text" in problems
    assert 'c: answer "D", expected A-C' in problems
    assert "d: every choice must be non-empty text" in problems and "0 -> A" in problems
    assert "row 5: missing key id" in problems and "row 5: choices is text" in problems
    assert "key 'id' holds different types" in problems and "6: category is a number" in problems
    assert validate_mcq(rows[:1])[0] == []
    assert validate_open([OPEN_ROW])[0] == []
    broken = [dict(OPEN_ROW, key_points=[{"point": "p"}]), dict(OPEN_ROW, id="o-2", reference="")]
    text = "\n".join(validate_open(broken)[0])
    assert "key_points[0] needs any_of" in text and "o-2: reference is blank" in text


def test_the_cloudsec_task_scores_banks_of_any_number_of_options(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("cloudsec_utils", BANK_DIR.parent / "utils.py")
    assert spec is not None and spec.loader is not None
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    three = [dict(r, choices=r["choices"][:3], answer="C") for r in PUBLISHED]
    assert check_bank(bank(tmp_path, three), "mcq") == []
    assert utils.mcq_choices(three[0]) == ["A", "B", "C"] and utils.mcq_target(three[0]) == 2
    prompt = utils.mcq_prompt(three[0])
    assert "\nC. " in prompt and "\nD. " not in prompt
    problems = check_bank(bank(tmp_path, three, "three.jsonl"), "mcq", choices=4)  # a fixed count, when asked
    assert problems and all("scores exactly 4" in p for p in problems)


def test_the_validator_never_crashes_on_odd_rows() -> None:
    rng = random.Random(7)
    odd: list[Any] = [
        None,
        True,
        0,
        -1,
        2.5,
        "",
        "A",
        "x" * 300,
        [],
        ["A"],
        [1, 2],
        {},
        {"any_of": []},
        [{"any_of": [1]}],
    ]
    keys = ["id", "question", "choices", "answer", "reference", "key_points", "category", "difficulty", "rationale"]
    for _ in range(300):
        rows = [
            {k: rng.choice(odd) for k in rng.sample(keys, rng.randrange(len(keys) + 1))}
            for _ in range(rng.randrange(1, 6))
        ]
        for strict in (False, True):
            problems, stats = validate_mcq(rows, strict=strict)
            assert isinstance(problems, list) and stats["questions"] == len(rows)
            problems, stats = validate_open(rows, strict=strict)
            assert isinstance(problems, list)


def test_the_shipped_format_is_documented() -> None:
    readme = (BANK_DIR / "README.md").read_text(encoding="utf-8")
    rows = load_jsonl(BANK_DIR / "mcq.jsonl") + load_jsonl(BANK_DIR / "open.jsonl")
    for key in {k for r in rows for k in r} | {"any_of", "point", "--strict"}:
        assert f"`{key}`" in readme, key
