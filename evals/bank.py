"""Question banks: load and validate the multiple-choice and open-question JSONL files.

Two levels of rules (the format is documented in ``evals/tasks/cloudsec/bank/README.md``):

- **general** (the default): what any bank must satisfy for the cloudsec tasks to score it: each
  row a JSON object; ids unique; a question; for a multiple-choice row two or more choices and an
  answer letter among them; for an open row a reference answer and key points with keywords.
  Other keys are kept and ignored, so a published benchmark converted to this shape passes as is.
- **strict** (``strict=True``, ``--strict``): the authoring rules of Bastion's own bank on top:
  exactly its keys, its eleven cloud categories, four distinct options without letter prefixes or
  "all/none of the above", a rationale, balanced answer letters, no near-duplicate questions and
  no "the longest option is right" giveaway; 3-6 key points found in the reference.

``python -m evals.bank --help`` validates banks from the command line.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
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
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
MCQ_REQUIRED = ("id", "question", "choices", "answer")
OPEN_REQUIRED = ("id", "question", "reference", "key_points")
MCQ_KEYS = {"id", "category", "difficulty", "question", "choices", "answer", "rationale"}
OPEN_KEYS = {"id", "category", "difficulty", "question", "reference", "key_points", "rationale"}
DIFFICULTIES = ("easy", "medium", "hard")
MAX_SHOWN = 50  # problems printed by the command line; the rest are counted
_WORDS = re.compile(r"[a-z0-9]+")


class BankFileError(ValueError):
    """A bank file that cannot be read as JSONL: missing, not UTF-8, a line that is not JSON."""


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file; any read or parse problem is a :class:`BankFileError` naming the
    file (and the line)."""
    path = Path(path)
    if not path.exists():
        raise BankFileError(f"{path}: no such file")
    if path.is_dir():
        raise BankFileError(f"{path}: a folder, expected a JSONL file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BankFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        lineno = data.count(b"\n", 0, exc.start) + 1
        raise BankFileError(
            f"{path}:{lineno}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); save it as UTF-8"
        ) from None
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError, ValueError) as exc:
            msg = getattr(exc, "msg", None) or type(exc).__name__
            raise BankFileError(f"{path}:{number}: not valid JSON ({msg})") from None
        if not isinstance(row, dict):
            raise BankFileError(f"{path}:{number}: expected a JSON object per line, got {_kind(row)}")
        rows.append(row)
    if not rows:
        raise BankFileError(f"{path}: no questions (an empty file)")
    return rows


def _kind(value: Any) -> str:
    return {
        dict: "an object",
        list: "a list",
        str: "text",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _what(value: Any) -> str:
    """What a value that should be non-empty text is instead."""
    return "blank" if isinstance(value, str) else _kind(value)


def _label(row: dict[str, Any], index: int) -> str:
    rid = row.get("id")
    return (
        str(rid)
        if isinstance(rid, (str, int)) and not isinstance(rid, bool) and str(rid).strip()
        else f"row {index + 1}"
    )


# -- rules any bank must satisfy ------------------------------------------------------------------


def _common(rows: list[dict[str, Any]], required: Sequence[str]) -> Iterator[tuple[str, dict[str, Any], list[str]]]:
    """``(label, row, problems)`` for each row, after the checks every bank shares: required keys,
    id and question. Bank-wide checks (unique ids, one type per key) are in :func:`_bank_wide`."""
    for i, row in enumerate(rows):
        label = _label(row, i)
        problems: list[str] = []
        missing = [k for k in required if k not in row]
        if missing:
            problems.append(f"{label}: missing key{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
        rid = row.get("id")
        if "id" in row and not (
            (isinstance(rid, str) and rid.strip()) or (isinstance(rid, int) and not isinstance(rid, bool))
        ):
            problems.append(f"{label}: id {json.dumps(rid)[:40]}, expected non-empty text or an integer")
        if "question" in row and not _text(row["question"]):
            problems.append(f"{label}: question is {_what(row['question'])}, expected non-empty text")
        if "category" in row and not _text(row["category"]):
            problems.append(f"{label}: category is {_what(row['category'])}, expected non-empty text")
        yield label, row, problems


def _bank_wide(rows: list[dict[str, Any]]) -> list[str]:
    """Ids used more than once; a key whose JSON type changes between rows (the dataset loader
    needs one type per column)."""
    ids = Counter(str(r["id"]) for r in rows if isinstance(r.get("id"), (str, int)))
    problems = [f"{i}: id used {n} times" for i, n in ids.items() if n > 1]
    types: dict[str, dict[str, str]] = {}
    for i, row in enumerate(rows):
        for key, value in row.items():
            if value is not None:
                types.setdefault(key, {}).setdefault(_kind(value), _label(row, i))
    for key, seen in types.items():
        if len(seen) > 1:
            kinds = ", ".join(f"{k} (e.g. {where})" for k, where in seen.items())
            problems.append(f"key '{key}' holds different types in different rows: {kinds}")
    return problems


def _mcq_general(label: str, row: dict[str, Any], problems: list[str]) -> None:
    choices = row.get("choices")
    if "choices" in row:
        if not isinstance(choices, list) or len(choices) < 2:
            count = f"{len(choices)} choice(s)" if isinstance(choices, list) else _kind(choices)
            problems.append(f"{label}: choices is {count}, expected a list of two or more options")
            choices = None
        elif len(choices) > len(LETTERS):
            problems.append(f"{label}: {len(choices)} choices, at most {len(LETTERS)} (A-Z)")
            choices = None
        elif not all(_text(c) for c in choices):
            problems.append(f"{label}: every choice must be non-empty text")
    if "answer" in row:
        answer = row["answer"]
        n = len(choices) if isinstance(choices, list) else None
        allowed = LETTERS[:n] if n else LETTERS
        if not isinstance(answer, str) or answer not in allowed:
            span = f"A-{allowed[-1]}" if n else "a letter"
            hint = " (a 0-based index? write its letter: 0 -> A)" if isinstance(answer, int) else ""
            problems.append(
                f"{label}: answer {json.dumps(answer)[:40]}, expected {span} naming one of the choices{hint}"
            )


def _open_general(label: str, row: dict[str, Any], problems: list[str]) -> None:
    if "reference" in row and not _text(row["reference"]):
        problems.append(f"{label}: reference is {_what(row['reference'])}, expected the reference answer as text")
    if "key_points" not in row:
        return
    points = row["key_points"]
    if not isinstance(points, list) or not points:
        problems.append(f"{label}: key_points is {_kind(points)}, expected a non-empty list of {{point, any_of}}")
        return
    for j, p in enumerate(points):
        keywords = p.get("any_of") if isinstance(p, dict) else None
        if not isinstance(keywords, list) or not keywords or not all(_text(k) for k in keywords):
            problems.append(f"{label}: key_points[{j}] needs any_of: a non-empty list of keywords (text)")


# -- Bastion's own authoring rules (strict) ------------------------------------------------------


def _shingles(text: str) -> set[tuple[str, ...]]:
    words = _WORDS.findall(text.lower())
    return {tuple(words[i : i + 3]) for i in range(max(1, len(words) - 2))}


def _near_duplicates(rows: list[dict[str, Any]], threshold: float = 0.7) -> list[tuple[str, str]]:
    sh = [(str(r.get("id")), _shingles(r["question"])) for r in rows if _text(r.get("question"))]
    pairs = []
    for i, (a, sa) in enumerate(sh):
        for b, sb in sh[i + 1 :]:
            if sa and sb and len(sa & sb) / len(sa | sb) >= threshold:
                pairs.append((a, b))
    return pairs


def _strict_common(label: str, row: dict[str, Any], keys: set[str], problems: list[str]) -> None:
    """Exactly ``keys``, a known category and difficulty, a rationale."""
    extra, missing = sorted(set(row) - keys, key=str), sorted(keys - set(row))
    if extra or missing:
        said = [
            f"unexpected {', '.join(map(str, extra))}" if extra else "",
            f"missing {', '.join(missing)}" if missing else "",
        ]
        problems.append(f"{label}: keys: {'; '.join(x for x in said if x)} (strict)")
    if "category" in row and row["category"] not in CATEGORIES:
        problems.append(
            f"{label}: category {json.dumps(row['category'])[:40]} not one of {', '.join(CATEGORIES)} (strict)"
        )
    if "difficulty" in row and row["difficulty"] not in DIFFICULTIES:
        shown = json.dumps(row["difficulty"])[:40]
        problems.append(f"{label}: difficulty {shown}, expected one of {', '.join(DIFFICULTIES)} (strict)")
    if not isinstance(row.get("rationale"), str) or len(row["rationale"]) < 20:
        problems.append(f"{label}: rationale missing or too short (strict: 20 characters or more)")


def _mcq_strict(label: str, row: dict[str, Any], problems: list[str]) -> None:
    _strict_common(label, row, MCQ_KEYS, problems)
    given = row.get("choices")
    choices: list[Any] = given if isinstance(given, list) else []
    texts = [c for c in choices if isinstance(c, str)]
    if len(texts) != 4 or len({c.strip().lower() for c in texts}) != 4:
        problems.append(f"{label}: needs four distinct choices (strict)")
    if any(re.match(r"^[A-D][.)]\s", c) for c in texts):
        problems.append(f"{label}: choices must not carry letter prefixes (strict)")
    if any("all of the above" in c.lower() or "none of the above" in c.lower() for c in texts):
        problems.append(f"{label}: 'all/none of the above' options are not allowed (strict)")


def _strictly_longest(r: dict[str, Any]) -> bool:
    choices = r.get("choices")
    answer = r.get("answer")
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices) or len(choices) < 2:
        return False
    if not isinstance(answer, str) or answer not in LETTERS[: len(choices)]:
        return False
    lengths = [len(c) for c in choices]
    i = LETTERS.index(answer)
    return lengths[i] > max(lengths[:i] + lengths[i + 1 :])


def _mcq_bank_strict(rows: list[dict[str, Any]], answers: Counter[Any], share: float) -> list[str]:
    problems = [f"{a} and {b}: near-duplicate questions (strict)" for a, b in _near_duplicates(rows)]
    expected = len(rows) / 4
    if any(abs(answers.get(k, 0) - expected) > max(2, 0.05 * len(rows)) for k in "ABCD"):
        problems.append(f"answers not balanced over A-D: {dict(sorted(answers.items(), key=str))} (strict)")
    if share > 0.35:
        problems.append(f"the correct option is the strictly longest in {share:.0%} of questions (a giveaway; strict)")
    return problems


def validate_mcq(
    rows: list[dict[str, Any]], *, strict: bool = False, choices: int | None = None
) -> tuple[list[str], dict[str, Any]]:
    """Problems in a multiple-choice bank, and its statistics.

    ``strict``: Bastion's authoring rules too. ``choices``: the number of options each question
    must have; None: two or more (the cloudsec_mcq task scores any number up to 26).
    """
    problems: list[str] = []
    for label, row, found in _common(rows, MCQ_REQUIRED):
        _mcq_general(label, row, found)
        n = row.get("choices")
        if choices is not None and isinstance(n, list) and len(n) >= 2 and len(n) != choices:
            found.append(
                f"{label}: {len(n)} choices; the cloudsec_mcq task scores exactly {choices} (A-{LETTERS[choices - 1]})"
            )
        if strict:
            _mcq_strict(label, row, found)
        problems += found
    problems += _bank_wide(rows)
    answers = Counter(r.get("answer") for r in rows if isinstance(r.get("answer"), str))
    longest = sum(_strictly_longest(r) for r in rows)
    share = longest / len(rows) if rows else 0.0
    if strict:
        problems += _mcq_bank_strict(rows, answers, share)
    stats = {
        "questions": len(rows),
        "answers": dict(sorted(answers.items())),
        "categories": _counts(rows, "category"),
        "difficulty": _counts(rows, "difficulty"),
        "correct_is_longest_share": round(share, 3),
    }
    return problems, stats


def validate_open(rows: list[dict[str, Any]], *, strict: bool = False) -> tuple[list[str], dict[str, Any]]:
    """Problems in an open-question bank, and its statistics (``strict``: Bastion's authoring rules too)."""
    problems: list[str] = []
    for label, row, found in _common(rows, OPEN_REQUIRED):
        _open_general(label, row, found)
        general_ok = not found
        if strict:
            _strict_common(label, row, OPEN_KEYS, found)
        if strict and general_ok:
            points = row["key_points"]
            if not 3 <= len(points) <= 6:
                found.append(f"{label}: {len(points)} key points, expected 3-6 (strict)")
            reference = row["reference"].lower()
            for p in points:
                if not any(k.lower() in reference for k in p["any_of"]):
                    found.append(
                        f"{label}: key point '{p.get('point')}' has no keyword found in the reference (strict)"
                    )
        problems += found
    problems += _bank_wide(rows)
    if strict:
        problems += [f"{a} and {b}: near-duplicate questions (strict)" for a, b in _near_duplicates(rows)]
    stats = {"questions": len(rows), "categories": _counts(rows, "category")}
    return problems, stats


def _counts(rows: list[dict[str, Any]], key: str) -> dict[str, int]:
    values = Counter(str(r[key]) for r in rows if key in r and r[key] is not None)
    return dict(sorted(values.items()))


def check_bank(path: Path, kind: str, *, strict: bool = False, choices: int | None = None) -> list[str]:
    """Problems in the bank file at ``path`` (``kind``: 'mcq' or 'open'); a file that cannot be
    read gives one problem saying why."""
    try:
        rows = load_jsonl(path)
    except BankFileError as exc:
        return [str(exc)]
    if kind == "mcq":
        return validate_mcq(rows, strict=strict, choices=choices)[0]
    return validate_open(rows, strict=strict)[0]


# -- command line --------------------------------------------------------------------------------

EPILOG = f"""\
examples:
  python -m evals.bank                          Bastion's own banks ({BANK_DIR.relative_to(BANK_DIR.parents[3])})
  python -m evals.bank --strict                 ... against Bastion's authoring rules
  python -m evals.bank my_mcq.jsonl             one multiple-choice bank
  python -m evals.bank --open my_open.jsonl     one open-question bank
  python -m evals.bank MCQ.jsonl OPEN.jsonl     both (same as --mcq MCQ.jsonl --open OPEN.jsonl)

The formats: evals/tasks/cloudsec/bank/README.md.
Exit status: 0 valid, 2 a problem in a bank or a file that cannot be read, 1 anything unexpected.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m evals.bank",
        description="Validate question banks (JSONL) for the cloudsec lm-eval tasks and print a summary.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("banks", nargs="*", metavar="FILE", help="MCQ bank, then optionally an open-question bank")
    parser.add_argument("--mcq", type=Path, metavar="FILE", help="a multiple-choice bank")
    parser.add_argument("--open", type=Path, metavar="FILE", help="an open-question bank")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="also apply the authoring rules of Bastion's own bank (its keys and eleven categories, four "
        "distinct options, a rationale, balanced answers, no near-duplicates or giveaways)",
    )
    return parser


def _targets(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[tuple[str, Path]]:
    if len(args.banks) > 2:
        parser.error("give at most two files: the multiple-choice bank, then the open-question bank")
    mcq = Path(args.banks[0]) if args.banks else None
    open_ = Path(args.banks[1]) if len(args.banks) > 1 else None
    if args.mcq and mcq or args.open and open_:
        parser.error("a bank given both by position and by --mcq/--open; use one of them")
    mcq, open_ = args.mcq or mcq, args.open or open_
    if mcq is None and open_ is None:
        return [("mcq", BANK_DIR / "mcq.jsonl"), ("open", BANK_DIR / "open.jsonl")]
    return [(kind, path) for kind, path in (("mcq", mcq), ("open", open_)) if path is not None]


def _summary(kind: str, stats: dict[str, Any]) -> str:
    what = "multiple-choice" if kind == "mcq" else "open"
    parts = [f"{stats['questions']} {what} questions"]
    if stats.get("categories"):
        parts.append(f"{len(stats['categories'])} categories")
    if kind == "mcq" and stats.get("answers"):
        parts.append("answers " + " ".join(f"{k}:{v}" for k, v in stats["answers"].items()))
        parts.append(f"correct option longest in {stats['correct_is_longest_share']:.0%}")
    return ", ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m evals.bank``: validate banks, print a summary; 0 valid, 2 problems."""
    parser = _parser()
    args = parser.parse_args(argv)
    bad = False
    out = sys.stdout
    for kind, path in _targets(parser, args):
        try:
            rows = load_jsonl(path)
        except BankFileError as exc:
            sys.stderr.write(f"error: {exc}\n")
            bad = True
            continue
        if kind == "mcq":
            problems, stats = validate_mcq(rows, strict=args.strict)
        else:
            problems, stats = validate_open(rows, strict=args.strict)
        mode = "strict" if args.strict else "general rules"
        verdict = "valid" if not problems else f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        out.write(f"{path}: {_summary(kind, stats)} ({mode}): {verdict}\n")
        for p in problems[:MAX_SHOWN]:
            out.write(f"  problem: {p}\n")
        if len(problems) > MAX_SHOWN:
            out.write(f"  ... and {len(problems) - MAX_SHOWN} more\n")
        bad = bad or bool(problems)
    return 2 if bad else 0


def run() -> None:
    """Entry point that never shows a traceback: problems exit 2, anything unexpected exits 1."""
    try:
        code = main()
    except KeyboardInterrupt:
        code = 130
    except Exception as exc:  # noqa: BLE001 - a validator must explain, not crash
        sys.stderr.write(f"error: unexpected {type(exc).__name__}: {exc}\n")
        code = 1
    raise SystemExit(code)


if __name__ == "__main__":
    run()
