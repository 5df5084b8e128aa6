"""Statistics of the eval report on hand-built per-question results with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evals.decontam import contaminated
from evals.stats import compare, mcnemar_exact, paired_bootstrap_ci
from evals.tasks.cloudsec.utils import key_point_coverage, rouge_l


def test_mcnemar_exact_matches_the_binomial_by_hand() -> None:
    base = np.array([1] * 10 + [0] * 10)
    tuned = np.array([0] * 2 + [1] * 8 + [1] * 8 + [0] * 2)
    p, b, c = mcnemar_exact(base, tuned)
    assert (b, c) == (2, 8)
    # two-sided exact: 2 * P(X <= 2 | n=10, p=0.5) = 2 * (1 + 10 + 45) / 1024
    assert p == pytest.approx(2 * 56 / 1024)


def test_mcnemar_no_discordant_pairs_is_p_one() -> None:
    same = np.array([1, 0, 1, 1])
    assert mcnemar_exact(same, same) == (1.0, 0, 0)


def test_bootstrap_ci_of_a_constant_shift_is_that_shift() -> None:
    base = np.linspace(0, 1, 50)
    low, high = paired_bootstrap_ci(base, base + 0.1, samples=500)
    assert low == pytest.approx(0.1) and high == pytest.approx(0.1)


def test_bootstrap_ci_covers_the_true_difference_and_is_paired() -> None:
    rng = np.random.default_rng(0)
    skill = rng.uniform(0, 1, 400)  # per-question difficulty shared by both models
    base = skill + rng.normal(0, 0.05, 400)
    tuned = skill + 0.03 + rng.normal(0, 0.05, 400)
    low, high = paired_bootstrap_ci(base, tuned, samples=2000)
    assert low < 0.03 < high
    assert high - low < 0.02  # pairing removes the shared variance; unpaired would be ~0.08 wide


def test_compare_verdicts() -> None:
    improved = compare([0] * 30 + [1] * 10, [1] * 30 + [1] * 10, binary=True)
    assert improved.verdict == "improved" and improved.diff == pytest.approx(0.75) and improved.p_value < 1e-6
    regressed = compare([0.8] * 40, [0.5] * 40, binary=False)
    assert regressed.verdict == "regressed" and regressed.ci_high < 0
    noise = compare([1, 0, 1, 0, 1, 0], [0, 1, 0, 1, 1, 0], binary=True)
    assert noise.verdict == "no significant change"
    empty = compare([], [], binary=True)
    assert empty.verdict == "no data" and math.isnan(empty.diff)
    with pytest.raises(ValueError):
        compare([1, 0], [1], binary=True)


def test_key_point_coverage_and_rouge_l() -> None:
    points = [
        {"point": "mfa", "any_of": ["mfa", "multi-factor"]},
        {"point": "encrypt", "any_of": ["kms", "encrypt"]},
        {"point": "logging", "any_of": ["cloudtrail"]},
    ]
    assert key_point_coverage("Require Multi-Factor auth and encrypt with KMS.", points) == pytest.approx(2 / 3)
    assert key_point_coverage("", points) == 0.0
    assert rouge_l("the cat sat", "the cat sat") == pytest.approx(1.0)
    assert rouge_l("the cat sat on the mat", "the cat lay on the mat") == pytest.approx(5 / 6)
    assert rouge_l("", "x") == 0.0


def test_decontamination_finds_shared_ngrams() -> None:
    train = ["Enable block public access on every bucket and require TLS for all requests to the bucket endpoint"]
    docs = [
        {
            "id": "q1",
            "question": "Why enable block public access on every bucket and require TLS for all requests to it?",
            "choices": [],
        },
        {"id": "q2", "question": "What does a network ACL evaluate?", "choices": ["rules in order"]},
    ]
    found = contaminated(train, docs, n=8)
    assert set(found) == {"q1"} and found["q1"] >= 3
