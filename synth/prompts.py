"""What the teacher is asked: the question types, the plan of types and personas per chunk, the
prompt, and the JSON schema of a reply.

The template hash covers every text and the schema below, so a change of wording invalidates the
cached replies that were written for the old wording, and nothing else does.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

#: Question types: name -> what the teacher is asked to write. The recipe's ``synth.question_types``
#: has one share per name (a test checks the schema's keys against this table).
QUESTION_TYPES: dict[str, str] = {
    "factual": "a factual question about something the source states, answered precisely.",
    "implementation": "a practical how-to question (how to configure, enforce or set up what the source "
    "describes), answered with the steps or settings the source gives.",
    "design_scenario": "a short architecture or design scenario (a team, a workload, a constraint) whose "
    "answer is the guidance the source gives, applied to the scenario.",
    "comparison": "a question comparing two options, settings or approaches the source mentions, answered "
    "with the differences and trade-offs the source states.",
    "risk_mitigation": "a question about a risk or threat the source covers, answered with the mitigations "
    "the source recommends.",
    "compliance_mapping": "a question asking which control, requirement or practice of the source addresses a "
    "stated security or compliance goal, answered from the source.",
    "troubleshooting": "a troubleshooting question (a symptom, a failed check or a misconfiguration), "
    "answered with what the source says to check or change.",
    "false_premise": "a question that rests on a WRONG assumption contradicting the source; the answer "
    "first corrects the assumption (say plainly that it is not so) and then gives what the source states.",
    "cannot_answer": "a natural, related question that the source does NOT answer; the answer says that the "
    "source does not cover it, names what information is missing, and adds no facts of its own.",
}

#: Types whose answer must quote the source; a cannot-answer pair carries no quotes.
UNQUOTED_TYPES = frozenset({"cannot_answer"})

SYSTEM = (
    "You write training data for a domain assistant: one question and its answer, grounded in a source "
    "text. Use only the source: every claim of the answer must be supported by it. Reply with one JSON "
    "object that matches the given schema and nothing else."
)

USER = """Source ({title} > {section}, {url}):
<<<
{text}
>>>

Write {kind_text}
Audience: the question is asked by {persona}; write it as they would ask it, self-contained
(never "the source", "the text" or "this section" in the question).
Answer: clear and complete, in your own words, using only facts stated in the source.
Evidence: {evidence_rule}
Reply as JSON with the keys "question", "answer" and "evidence"."""

EVIDENCE_QUOTED = (
    "1 to {max_quotes} short passages copied WORD FOR WORD from the source (each at least {min_words} words) "
    "that support the answer."
)
EVIDENCE_NONE = "an empty list (the source has nothing to quote for this question)."

RETRY = (
    "Your reply was not valid: {error}. Reply again with only one JSON object with the keys "
    '"question", "answer" and "evidence" (a list of strings).'
)


def reply_schema(max_quotes: int) -> dict[str, Any]:
    """The JSON schema every reply must match (sent as ``response_format``)."""
    return {
        "type": "object",
        "properties": {
            "question": {"type": "string", "minLength": 10, "maxLength": 2000},
            "answer": {"type": "string", "minLength": 10, "maxLength": 8000},
            "evidence": {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": max_quotes},
        },
        "required": ["question", "answer", "evidence"],
        "additionalProperties": False,
    }


def template_hash() -> str:
    """Hash of the prompt templates, the type texts and the reply schema's shape."""
    payload = json.dumps(
        {
            "types": QUESTION_TYPES,
            "system": SYSTEM,
            "user": USER,
            "quoted": EVIDENCE_QUOTED,
            "none": EVIDENCE_NONE,
            "retry": RETRY,
            "schema": reply_schema(0),
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class Request:
    """One planned pair: which chunk, which slot of it, which question type, which persona."""

    chunk_index: int
    slot: int
    kind: str
    persona: str


def _unit(*parts: object) -> float:
    """A number in [0, 1) from a hash of ``parts`` (stable across runs and machines)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def plan(
    chunk_hashes: list[str], shares: dict[str, float], personas: list[str], per_chunk: int, seed: int
) -> list[Request]:
    """The requests for the chunks: per chunk, ``per_chunk`` slots evenly spaced from a hashed offset on
    the types' cumulative shares (stratified sampling: over many chunks each type's share converges to
    its target, and one chunk gets different types), and personas in turn from a hashed offset.

    A chunk's requests depend only on its own hash, so adding or removing chunks leaves the other
    chunks' requests, and their cached replies, unchanged.
    """
    kinds = [(k, float(shares[k])) for k in QUESTION_TYPES if float(shares.get(k, 0)) > 0]
    total = sum(s for _, s in kinds)
    bounds: list[tuple[float, str]] = []
    acc = 0.0
    for kind, share in kinds:
        acc += share / total
        bounds.append((acc, kind))
    requests = []
    for index, chunk_hash in enumerate(chunk_hashes):
        offset = _unit(seed, "type", chunk_hash)
        first_persona = int(_unit(seed, "persona", chunk_hash) * len(personas))
        for slot in range(per_chunk):
            u = (offset + slot / per_chunk) % 1.0
            kind = next((k for bound, k in bounds if u < bound), bounds[-1][1])
            persona = personas[(first_persona + slot) % len(personas)]
            requests.append(Request(index, slot, kind, persona))
    return requests


def messages(chunk: Any, request: Request, max_quotes: int, min_words: int) -> list[dict[str, str]]:
    """The chat messages of one request."""
    rule = (
        EVIDENCE_NONE
        if request.kind in UNQUOTED_TYPES
        else EVIDENCE_QUOTED.format(max_quotes=max_quotes, min_words=min_words)
    )
    user = USER.format(
        title=chunk.title,
        section=chunk.section,
        url=chunk.url,
        text=chunk.text,
        kind_text=QUESTION_TYPES[request.kind],
        persona=request.persona,
        evidence_rule=rule,
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def retry_message(error: str) -> dict[str, str]:
    return {"role": "user", "content": RETRY.format(error=error[:300])}
