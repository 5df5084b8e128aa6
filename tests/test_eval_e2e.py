"""Evals end to end: the tiny base and tuned models through real lm-eval on a slice of the suite."""

from __future__ import annotations

import json
import re

import pytest
from conftest import REPO

from bastion.recipe import load_recipe
from bastion.run_folder import RunFolder
from bastion.runner import run_stage, stage_named
from evals.bank import CATEGORIES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> RunFolder:
    tmp = tmp_path_factory.mktemp("eval")
    text = (REPO / "recipes" / "tiny-cpu.yaml").read_text()
    text = text.replace("name: tiny-cpu", "name: eval-e2e").replace(
        "path: corpus/cloudsec-mini", f"path: {REPO / 'recipes' / 'corpus' / 'cloudsec-mini'}"
    )
    # a slice that still holds every category: 2 multiple-choice and 1 open question per category
    bank = REPO / "evals" / "tasks" / "cloudsec" / "bank"
    mcq = [json.loads(x) for x in (bank / "mcq.jsonl").read_text().splitlines()]
    opn = [json.loads(x) for x in (bank / "open.jsonl").read_text().splitlines()]
    mcq_slice = [q for c in CATEGORIES for q in [q for q in mcq if q["category"] == c][:2]]
    open_slice = [q for c in CATEGORIES for q in [q for q in opn if q["category"] == c][:1]]
    (tmp / "mcq.jsonl").write_text("".join(json.dumps(q) + "\n" for q in mcq_slice))
    (tmp / "open.jsonl").write_text("".join(json.dumps(q) + "\n" for q in open_slice))
    text = re.sub(r"  limit: \d+.*\n", "  limit: null\n  banks: {mcq: mcq.jsonl, open: open.jsonl}\n", text, count=1)
    text = text.replace("  max_gen_tokens: 32\n", "  max_gen_tokens: 16\n")
    path = tmp / "recipe.yaml"
    path.write_text(text)
    recipe = load_recipe(path)
    folder = RunFolder.for_recipe(recipe, base=tmp / "runs")
    run_stage(stage_named("harvest"), recipe, folder)
    run_stage(stage_named("train"), recipe, folder)
    run_stage(stage_named("eval"), recipe, folder)
    return folder


def test_report_has_both_models_every_category_and_intervals(evaluated: RunFolder) -> None:
    report = json.loads(evaluated.eval_report_json.read_text())
    assert report["compared"] is True
    mcq = report["tasks"]["cloudsec_mcq"]["metrics"]["acc"]
    assert set(mcq["by_category"]) == set(CATEGORIES)
    assert mcq["overall"]["n"] == 22
    for row in [mcq["overall"], *mcq["by_category"].values()]:
        assert 0 <= row["base"] <= 1 and 0 <= row["tuned"] <= 1
        assert row["ci_low"] <= row["diff"] <= row["ci_high"]
        assert row["verdict"] in ("improved", "regressed", "no significant change")
        assert row["test"] == "mcnemar_exact" and 0 <= row["p_value"] <= 1
    coverage = report["tasks"]["cloudsec_open"]["metrics"]["key_point_coverage"]
    assert set(coverage["by_category"]) == set(CATEGORIES) and coverage["overall"]["n"] == 11
    assert evaluated.eval_plot.read_bytes()[:4] == b"\x89PNG"
    md = evaluated.eval_report_md.read_text()
    assert "| **all** | 22 |" in md and "lm_eval --model hf" in md and "peft=" in md


def test_raw_outputs_are_kept_and_prompts_are_identical(evaluated: RunFolder) -> None:
    eval_dir = evaluated.eval_dir
    for model in ("base", "tuned"):
        results = json.loads((eval_dir / model / "results.json").read_text())
        assert "cloudsec_mcq" in results["results"]
        assert (eval_dir / model / "samples_cloudsec_mcq.jsonl").is_file()
    base = [json.loads(x) for x in (eval_dir / "base" / "samples_cloudsec_mcq.jsonl").read_text().splitlines()]
    tuned = [json.loads(x) for x in (eval_dir / "tuned" / "samples_cloudsec_mcq.jsonl").read_text().splitlines()]
    assert [b["arguments"] for b in base] == [t["arguments"] for t in tuned]  # the same prompts, byte for byte
    prompt = str(base[0]["arguments"])
    assert "<|start_header_id|>system<|end_header_id|>" in prompt and "Cloud Security Architect" in prompt
    # the adapter is really applied: the tuned log-likelihoods differ from the base ones
    assert [b["resps"] for b in base] != [t["resps"] for t in tuned]


def test_manifest_records_the_eval(evaluated: RunFolder) -> None:
    entry = evaluated.stage_entry("eval")
    assert entry["status"] == "ok" and "cloudsec_mcq" in entry["summary"]
