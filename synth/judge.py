"""The optional faithfulness judge: calibrated on the rubric's labelled cases, then scoring pairs.

A verdict's score is capped by the violations it lists (the rubric's own rule), so a judge that
names a contradiction cannot pass the pair with a 5.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import jsonschema

from bastion.errors import ToolError
from synth import rubric
from synth.asking import Ask, Sampling, ask_all
from synth.cache import Reply, ReplyCache, key
from synth.client import Teacher

log = logging.getLogger(__name__)

JUDGE_MAX_TOKENS = 256


def rubric_hash() -> str:
    payload = json.dumps({"instructions": rubric.instructions(), "schema": rubric.reply_schema()}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def check_verdict(content: str, finish_reason: str | None) -> str | None:
    """None when ``content`` is a verdict matching the judge's schema, else the reason."""
    try:
        data = json.loads(content)
    except json.JSONDecodeError as exc:
        return f"judge_unreadable: {exc.msg}"
    errors = list(jsonschema.Draft202012Validator(rubric.reply_schema()).iter_errors(data))
    return f"judge_unreadable: {errors[0].message[:160]}" if errors else None


def score(reply: Reply) -> int | None:
    """The verdict's score, capped by its violations; None for an unreadable verdict."""
    if reply.error is not None:
        return None
    data = json.loads(reply.content)
    caps = [rubric.VIOLATIONS[v][0] for v in data["violations"]]
    return min([int(data["score"]), *caps])


@dataclass
class Judge:
    teacher: Teacher
    cache: ReplyCache
    identity: dict[str, Any]
    sampling: Sampling
    parse_retries: int

    def _asks(self, items: list[tuple[str, str, str]]) -> list[Ask]:
        h = rubric_hash()
        return [
            Ask(
                key(judge=self.identity, rubric=h, source=s, question=q, answer=a),
                "judge",
                rubric.messages(s, q, a),
                rubric.reply_schema(),
                "verdict",
                i,
            )
            for i, (s, q, a) in enumerate(items)
        ]

    def scores(self, items: list[tuple[str, str, str]], label: str) -> tuple[list[int | None], int]:
        replies, hits = ask_all(
            self.teacher, self.cache, self._asks(items), self.sampling, check_verdict, self.parse_retries, label
        )
        return [score(r) for r in replies], hits

    def calibrate(self, min_agreement: float) -> dict[str, Any]:
        """Score the rubric's labelled cases; fail when the judge agrees with fewer than ``min_agreement``."""
        cases = rubric.CASES
        scores, _ = self.scores([(c["source"], c["question"], c["answer"]) for c in cases], "judge calibration")
        agree = sum(
            s is not None and (s >= rubric.PASS_SCORE) == rubric.label(c) for s, c in zip(scores, cases, strict=True)
        )
        share = agree / len(cases)
        result = {"cases": len(cases), "agreeing": agree, "agreement": round(share, 4), "min_agreement": min_agreement}
        log.info("synth: the judge agrees with %d of %d labelled rubric cases (%.0f%%)", agree, len(cases), 100 * share)
        if share < min_agreement:
            raise ToolError(
                f"the judge agrees with only {agree} of {len(cases)} labelled rubric cases ({share:.0%} < "
                f"synth.judge.min_agreement {min_agreement:.0%}): use a stronger judge model or turn the judge off"
            )
        return result
