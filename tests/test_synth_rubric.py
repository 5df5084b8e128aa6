"""The judge's rubric: at least 20 labelled calibration cases, and none contradicts the instructions."""

from __future__ import annotations

import json

import pytest

from synth import gates, rubric

CASES = rubric.CASES


def test_enough_cases_of_both_labels_and_every_violation() -> None:
    assert len(CASES) >= 20
    labels = [rubric.label(c) for c in CASES]
    assert sum(labels) >= 8 and len(labels) - sum(labels) >= 8
    used = {v for c in CASES for v in c["violations"]}
    assert used == set(rubric.VIOLATIONS)
    assert {c.get("kind") for c in CASES} >= {None, "false_premise", "cannot_answer"}
    assert any(c.get("example") for c in CASES if rubric.label(c))
    assert any(c.get("example") for c in CASES if not rubric.label(c))


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['score']}-{c['question'][:40]}")
def test_each_case_agrees_with_the_instructions(case: dict) -> None:
    score, violations = int(case["score"]), case["violations"]
    assert score in rubric.SCALE
    assert set(violations) <= set(rubric.VIOLATIONS)
    if violations:  # a violation caps the score, and a capped pair fails
        assert score <= min(rubric.VIOLATIONS[v][0] for v in violations)
        assert not rubric.label(case)
    else:  # no violation: faithful, at the pass mark or above
        assert score >= rubric.PASS_SCORE and rubric.label(case)
    source = case["source"]
    if {"contradiction", "false_premise_accepted"} & set(violations):
        # what the answer contradicts is really in the source
        assert gates.quote_found(case["contradicts"], gates.normalise(source))
    for phrase in case.get("unsupported", []):
        # the unsupported part is in the answer and not in the source
        assert gates.normalise(phrase) in gates.normalise(case["answer"])
        assert gates.support(phrase, source) < 1.0
    if not violations and case.get("kind") == "cannot_answer":
        assert gates.MISSING_MARKERS.search(case["answer"]), "a faithful cannot-answer says what is missing"
    elif not violations:
        # the mechanical grounding gate agrees that a faithful answer is supported by its source
        assert gates.support(case["answer"], source + "\n" + case["question"]) >= 0.6
    if case.get("kind") == "false_premise" and not violations:
        assert gates.CORRECTION_MARKERS.search(case["answer"])


def test_the_prompt_is_rendered_from_the_rubric() -> None:
    text = rubric.instructions()
    for score, line in rubric.SCALE.items():
        assert f"{score}: {line}" in text
    for vid, (cap, _) in rubric.VIOLATIONS.items():
        assert f"- {vid} (score at most {cap})" in text
    for case in (c for c in CASES if c.get("example")):
        assert case["answer"] in text
        assert json.dumps({"score": case["score"], "violations": case["violations"]}) in text
    schema = rubric.reply_schema()
    assert schema["properties"]["violations"]["items"]["enum"] == sorted(rubric.VIOLATIONS)


def test_a_contradicting_example_would_be_caught() -> None:
    bad = dict(CASES[2], score=5)  # a contradiction scored 5
    with pytest.raises(AssertionError):
        test_each_case_agrees_with_the_instructions(bad)
