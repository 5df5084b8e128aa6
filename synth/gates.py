"""The mechanical gates of one pair: the reply parses against its schema, its quotes are in the chunk,
and its answer is supported by the chunk.

Each gate is an entry of :data:`GATES` (a reason and a check, as datatrove's filters are); a
rejected pair is counted under the reason of the first gate it fails, and the report's list of
reasons derives from this list.

Normalisation before any comparison: Unicode NFKC, curly quotes and primes to straight ones, dashes
to '-', Markdown emphasis and code marks (``*``, backticks) removed, whitespace collapsed, case folded.
Support: the share of the answer's content words (words of 3+ letters or with a digit, not in a
short list of function words, compared by a crude stem) that occur in the chunk.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jsonschema

from synth.prompts import UNQUOTED_TYPES

_QUOTES = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u2032": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u201f": '"',
        "\u2033": '"',
        "\u00ab": '"',
        "\u00bb": '"',
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2013": "-",
        "\u2014": "-",
        "\u2212": "-",
        "*": " ",
        "`": " ",
    }
)
_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"\w+")
_ELLIPSIS = re.compile(r"\.\.\.|\u2026|\[\.\.\.\]")

STOPWORDS = frozenset(
    """
    a about above after again against all also am an and any are as at be because been before being
    below between both but by can cannot could did do does doing down during each either else even
    every few for from further had has have having he her here hers him his how however i if in into is
    it its itself just let may me might more most must my no nor not now of off on once one only or
    other our ours out over own per same shall she should so some such than that the their them then
    there these they this those through to too under until up upon us use used uses using very via was
    we were what when where whether which while who whom whose why will with within without would yes
    you your yours also instead rather well like make makes made need needs needed want wants way ways
    get gets thing things something anything everything first second third new many much often still
    yet already always never sure ensure helps help provide provides provided include includes including
    example case cases specific specifically overall based answer question source text section document
    recommend recommends recommended says states stated describe describes described
    covered cover covers mention mentions mentioned information detail details missing documentation
    nothing said here there guidance
    """.split()
)

MISSING_MARKERS = re.compile(
    r"\b(not (?:cover|covered|mention|mentioned|say|said|state|stated|specif|describ|address|includ|provid|discuss|"
    r"contain|explain|list|give|answer)\w*|does ?n[o']t|doesn't|no information|no details?|missing|silent|"
    r"outside (?:the|its) scope|isn't covered|is not covered|unknown|unclear|cannot be answered|can't be answered|"
    r"not enough information)\b",
    re.IGNORECASE,
)
CORRECTION_MARKERS = re.compile(
    r"\b(no|not|n't|incorrect|wrong|false|mistaken|misconception|actually|in fact|rather|contrary|"
    r"however|premise|assumption|never|untrue|inaccurate)\b",
    re.IGNORECASE,
)
SOURCE_REFERENCE = re.compile(
    r"\b(the|this) (source|text|passage|section|excerpt|document|chunk|snippet)\b|\baccording to the\b", re.IGNORECASE
)


def normalise(text: str) -> str:
    """Text as quotes are compared: NFKC, straight quotes and dashes, no emphasis marks, one space, folded case."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).translate(_QUOTES)).strip().casefold()


def stem(word: str) -> str:
    """A crude English stem: enough that 'keys'/'key' and 'rotated'/'rotate' compare equal."""
    for suffix, keep in (("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            return word[: len(word) - len(suffix)] + keep
    return word


def content_words(text: str) -> set[str]:
    """Stems of the words that carry content: 3+ letters or a digit, not a function word."""
    out = set()
    for word in _WORD.findall(normalise(text)):
        if word in STOPWORDS or (len(word) < 3 and not any(c.isdigit() for c in word)):
            continue
        out.add(stem(word))
    return out


def support(answer: str, reference: str) -> float:
    """Share of the answer's content words found in ``reference`` (1.0 for an answer without any)."""
    words = content_words(answer)
    if not words:
        return 1.0
    return len(words & content_words(reference)) / len(words)


def quote_found(quote: str, chunk_norm: str) -> bool:
    """Whether every part of ``quote`` (split at ellipses) occurs in the normalised chunk, in order."""
    position = 0
    parts = [normalise(p).strip(" .,;:'\"") for p in _ELLIPSIS.split(quote)]
    for part in (p for p in parts if p):
        found = chunk_norm.find(part, position)
        if found < 0:
            return False
        position = found + len(part)
    return any(parts)


@dataclass(frozen=True)
class Pair:
    question: str
    answer: str
    evidence: list[str]


@dataclass(frozen=True)
class Parsed:
    """A reply read against the schema: the pair, or why it is refused."""

    pair: Pair | None
    error: str | None  # reason (a PARSE_REASONS key) and detail, "reason: detail"


PARSE_REASONS = {
    "empty_reply": "the reply was empty",
    "truncated": "the reply was cut at max_tokens and is not complete JSON",
    "invalid_json": "the reply is not JSON",
    "schema_mismatch": "the JSON does not match the reply schema",
    "teacher_refused": "the server refused the request (an HTTP 4xx)",
}


def parse(content: str, finish_reason: str | None, schema: dict[str, Any]) -> Parsed:
    """Read one reply as a pair; never raises."""
    text = content.strip()
    if not text:
        return Parsed(None, "empty_reply: no content")
    if text.startswith("```"):  # a fenced block despite the instructions
        text = text.strip("`").removeprefix("json").strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        reason = "truncated" if finish_reason == "length" else "invalid_json"
        return Parsed(None, f"{reason}: {exc.msg} at character {exc.pos}")
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        where = "/".join(str(p) for p in errors[0].absolute_path) or "(top)"
        return Parsed(None, f"schema_mismatch: {where}: {errors[0].message[:160]}")
    pair = Pair(data["question"].strip(), data["answer"].strip(), [q for q in data["evidence"] if q.strip()])
    return Parsed(pair, None)


@dataclass(frozen=True)
class Context:
    """What a gate sees: the pair, its question type, the chunk (raw and normalised), the settings."""

    pair: Pair
    kind: str
    chunk: str
    chunk_norm: str
    min_support: float
    min_quote_words: int


@dataclass(frozen=True)
class Gate:
    """One grounding check: ``reject(ctx)`` is True when the pair fails it."""

    reason: str
    description: str
    reject: Callable[[Context], bool]


def _quoted(ctx: Context) -> bool:
    return ctx.kind not in UNQUOTED_TYPES


GATES: list[Gate] = [
    Gate(
        "question_not_self_contained",
        "the question refers to 'the source', 'this section' or the like",
        lambda c: bool(SOURCE_REFERENCE.search(c.pair.question)),
    ),
    Gate("no_evidence", "a pair that must quote the chunk has no quote", lambda c: _quoted(c) and not c.pair.evidence),
    Gate(
        "quote_too_short",
        "a quote has fewer than grounding.min_quote_words words",
        lambda c: any(len(_WORD.findall(q)) < c.min_quote_words for q in c.pair.evidence),
    ),
    Gate(
        "quote_not_in_chunk",
        "a quote is not in the chunk (after normalisation)",
        lambda c: any(not quote_found(q, c.chunk_norm) for q in c.pair.evidence),
    ),
    Gate(
        "unsupported_answer",
        "less than grounding.min_support of the answer's content words are in the chunk",
        lambda c: _quoted(c) and support(c.pair.answer, c.chunk) < c.min_support,
    ),
    Gate(
        "premise_not_corrected",
        "a false-premise answer does not correct the premise",
        lambda c: c.kind == "false_premise" and not CORRECTION_MARKERS.search(c.pair.answer),
    ),
    Gate(
        "missing_not_stated",
        "a cannot-answer answer does not say what the chunk lacks",
        lambda c: c.kind == "cannot_answer" and not MISSING_MARKERS.search(c.pair.answer),
    ),
    Gate(
        "asserts_absent_facts",
        "a cannot-answer answer asserts facts that are neither in the chunk nor in the question",
        lambda c: (
            c.kind == "cannot_answer" and support(c.pair.answer, c.chunk + "\n" + c.pair.question) < c.min_support
        ),
    ),
    Gate(
        "answer_copies_chunk",
        "the answer is a long verbatim copy of the chunk, not an answer in the teacher's words",
        lambda c: len(_WORD.findall(c.pair.answer)) >= 25 and normalise(c.pair.answer) in c.chunk_norm,
    ),
]

GROUNDING_REASONS = {g.reason: g.description for g in GATES}


def grounding_verdict(pair: Pair, kind: str, chunk: str, min_support: float, min_quote_words: int) -> str | None:
    """The reason of the first gate ``pair`` fails, or None when it is grounded."""
    ctx = Context(pair, kind, chunk, normalise(chunk), min_support, min_quote_words)
    for gate in GATES:
        if gate.reject(ctx):
            return gate.reason
    return None
