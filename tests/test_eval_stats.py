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


def _rows(values: list[float], category: str | None = None) -> dict[str, dict]:
    doc = {} if category is None else {"category": category}
    return {f"q{i}": {"category": doc.get("category", "all"), "doc": doc, "acc": v} for i, v in enumerate(values)}


def test_a_bring_your_own_bank_is_named_after_it_and_its_single_category_listed_once(tmp_path) -> None:
    import json

    from conftest import REPO

    from bastion.recipe import load_recipe
    from bastion.run_folder import RunFolder
    from evals.compare import build_report

    (tmp_path / "pubbench.jsonl").write_text(
        json.dumps({"id": "p1", "question": "Q?", "choices": ["a", "b"], "answer": "A"}) + "\n"
    )
    text = (REPO / "recipes" / "tiny-cpu.yaml").read_text()
    text = text.replace("  tasks: [cloudsec]\n", "  tasks: [cloudsec]\n  banks: {mcq: pubbench.jsonl}\n")
    text = text.replace("path: corpus/cloudsec-mini", f"path: {REPO / 'recipes' / 'corpus' / 'cloudsec-mini'}")
    (tmp_path / "r.yaml").write_text(text)
    recipe = load_recipe(tmp_path / "r.yaml")
    folder = RunFolder.for_recipe(recipe, base=tmp_path / "runs")
    folder.eval_dir.mkdir(parents=True)
    runs = {"base": {"cloudsec_mcq": _rows([0, 1, 0, 1])}, "tuned": {"cloudsec_mcq": _rows([1, 1, 0, 1])}}
    report = build_report(recipe, folder, runs, {"base": "lm_eval ...", "tuned": "lm_eval ..."})
    md = folder.eval_report_md.read_text()
    assert "## pubbench (cloudsec_mcq on pubbench.jsonl)" in md
    assert md.count("| **all** |") == 1 and "| all |" not in md  # the bank has no categories: one row
    assert report["tasks"]["cloudsec_mcq"]["metrics"]["acc"]["overall"]["n"] == 4


def test_bits_per_byte_comparison_is_paired_over_documents() -> None:
    from evals.stats import compare_bits_per_byte

    nbytes = [1000.0, 2000.0, 1500.0]
    base = [-2000.0, -4200.0, -3100.0]
    tuned = [b * 0.7 for b in base]  # every page 30% more likely per byte
    c = compare_bits_per_byte(base, tuned, nbytes, samples=500, seed=1)
    assert c.tuned < c.base and c.ci_high < 0 and c.verdict == "improved"
    same = compare_bits_per_byte(base, base, nbytes, samples=500, seed=1)
    assert same.diff == 0 and same.ci_low == same.ci_high == 0 and same.verdict == "no significant change"
