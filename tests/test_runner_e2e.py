"""The stage runner end to end on the tiny model: `all` with the GGUF evaluation, skipping what is up to
date, re-running what depends on a re-export, and refusing to build on a failed or changed stage."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

from bastion.errors import BadInputError, StaleStageError, ToolError
from bastion.recipe import Recipe, load_recipe
from bastion.run_folder import RunFolder
from bastion.runner import run_all, run_stage, stage_named

pytestmark = pytest.mark.slow

MCQ = {
    "id": "t-001",
    "category": "iam",
    "difficulty": "easy",
    "question": "Which grants least privilege?",
    "choices": ["Admin", "Scoped role", "Root key", "Shared user"],
    "answer": "B",
    "rationale": "Scoped roles grant only what is needed (test item).",
}
OPEN = {
    "id": "o-001",
    "category": "iam",
    "difficulty": "easy",
    "question": "Name one MFA factor.",
    "reference": "A hardware security key.",
    "key_points": [{"point": "key", "any_of": ["key"]}],
    "rationale": "test item",
}


def tiny_recipe(folder: Path, name: str, extra_eval: str = "", min_records: int = 5) -> Path:
    """tiny-cpu.yaml under another name, with the corpus path made absolute."""
    text = (REPO / "recipes" / "tiny-cpu.yaml").read_text()
    text = text.replace("name: tiny-cpu", f"name: {name}")
    text = text.replace("path: corpus/cloudsec-mini", f"path: {REPO / 'recipes' / 'corpus' / 'cloudsec-mini'}")
    text = text.replace("    min_records: 5\n", f"    min_records: {min_records}\n")
    text = re.sub(r"  limit: \d+.*\n", f"  limit: null\n{extra_eval}", text, count=1)
    text = text.replace("  gguf_tasks: [heldout_domain]\n", "  gguf_tasks: null\n")  # every task on the GGUF
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Recipe, RunFolder, dict[str, str]]:
    """A fresh run of every stage with eval.gguf on, on a two-question bank (the GGUF server scores
    each log-likelihood slowly on CPU)."""
    tmp = tmp_path_factory.mktemp("runner")
    (tmp / "mcq.jsonl").write_text(json.dumps(MCQ) + "\n")
    (tmp / "open.jsonl").write_text(json.dumps(OPEN) + "\n")
    extra = f"  banks: {{mcq: {tmp}/mcq.jsonl, open: {tmp}/open.jsonl}}\n"
    recipe = load_recipe(tiny_recipe(tmp, "runner-e2e", extra))
    recipe.eval["max_gen_tokens"] = 8
    folder = RunFolder.for_recipe(recipe, base=tmp / "runs")
    return recipe, folder, run_all(recipe, folder)


def test_all_runs_every_stage_and_evaluates_the_gguf_it_exported(chain: Any) -> None:
    recipe, folder, outcome = chain
    assert outcome == {
        "harvest": "ok",
        "synth": "disabled",
        "train": "ok",
        "eval": "ok",
        "export": "ok",
        "eval-gguf": "ok",
    }
    report = json.loads(folder.gguf_eval_report_json.read_text())
    assert report["gguf"] == folder.gguf("q4_k_m").name
    assert report["summary"]["cloudsec_mcq"]["acc"]["n"] == 1
    assert report["summary"]["cloudsec_open"]["key_point_coverage"]["n"] == 1
    samples = [json.loads(x) for x in (folder.gguf_eval_dir / "samples_cloudsec_mcq.jsonl").read_text().splitlines()]
    assert "<|start_header_id|>system<|end_header_id|>" in str(samples[0]["arguments"])  # the chat template
    logliks = [r[0][0] for r in samples[0]["resps"]]
    assert len(logliks) == 4 and all(x < 0 for x in logliks)
    entry = folder.stage_entry("eval-gguf")
    assert entry["upstream"]["export"] == folder.stage_entry("export")["run_id"]
    assert str(folder.gguf("q4_k_m").relative_to(folder.root)) in json.dumps(folder.stage_entry("export")["outputs"])


def test_the_tuned_model_learned_the_held_out_domain_and_the_gguf_kept_it(chain: Any) -> None:
    """Fails when learning breaks: data that never reached training or an adapter not applied at eval
    leave tuned = base (the interval then touches 0); an export that lost the tuning puts the GGUF
    far from the tuned model."""
    recipe, folder, _ = chain
    heldout = [json.loads(x) for x in folder.heldout.read_text().splitlines()]
    report = json.loads(folder.eval_report_json.read_text())
    domain = report["domain"]["heldout_domain"]
    assert domain["documents"] == len(heldout) >= 2
    b = domain["bits_per_byte"]
    assert b["tuned"] < b["base"] and b["ci_high"] < 0 and b["verdict"] == "improved", b
    assert domain["word_perplexity"]["tuned"] < domain["word_perplexity"]["base"]
    assert "heldout_domain" in report["commands"]["tuned"] and "heldout_pages" in report["commands"]["tuned"]
    assert "held-out domain text" in folder.eval_report_md.read_text()
    gguf = json.loads(folder.gguf_eval_report_json.read_text())["domain"]["heldout_domain"]["bits_per_byte"]
    assert gguf["base"] == pytest.approx(b["tuned"])  # the GGUF report compares with the tuned HF model
    assert abs(gguf["ratio_to_tuned"] - 1) <= 0.02, gguf
    card = folder.model_card.read_text()
    assert "Held-out domain text" in card


def test_rerun_skips_what_is_up_to_date_and_reexport_reruns_the_gguf_eval(chain: Any) -> None:
    recipe, folder, _ = chain
    assert set(run_all(recipe, folder).values()) == {"up to date", "disabled"}  # synth is off
    before = folder.stage_entry("eval-gguf")["run_id"]
    outcome = run_all(recipe, folder, force=("export",))
    assert outcome == {
        "harvest": "up to date",
        "synth": "disabled",
        "train": "up to date",
        "eval": "up to date",
        "export": "ok",
        "eval-gguf": "ok",
    }
    assert folder.stage_entry("eval-gguf")["run_id"] != before


def test_a_failed_eval_moves_its_report_aside_and_blocks_the_gguf_eval(
    chain: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe, folder, _ = chain
    assert folder.eval_report_md.is_file()
    import evals.runner

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ToolError("lm-eval failed (simulated)")

    monkeypatch.setattr(evals.runner, "evaluate_model", broken)
    with pytest.raises(ToolError, match=r"simulated.*\n.*eval: its outputs were moved aside to \S+failed/eval"):
        run_stage(stage_named("eval"), recipe, folder)
    assert not folder.eval_report_md.exists() and not folder.eval_run("tuned").exists()
    moved = folder.failed_dir("eval") / folder.eval_report_md.relative_to(folder.root)
    assert moved.is_file()
    assert folder.stage_entry("eval")["status"] == "failed"
    with pytest.raises(StaleStageError, match=r"eval-gguf reads what eval writes, and its last run ended 'failed'"):
        run_stage(stage_named("eval-gguf"), recipe, folder)


def test_a_failed_train_moves_the_old_adapter_aside_and_blocks_eval_and_export(
    chain: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe, folder, _ = chain
    assert folder.adapter.is_dir()
    import train.pipeline

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ToolError("axolotl train exited with code 1 (simulated)")

    monkeypatch.setattr(train.pipeline, "launch", broken)
    with pytest.raises(ToolError, match="simulated"):
        run_stage(stage_named("train"), recipe, folder)
    assert not folder.adapter.exists()  # the previous run's adapter cannot be mistaken for this one's
    for stage in ("eval", "export"):
        with pytest.raises(StaleStageError, match=rf"{stage} reads what train writes, and its last run ended 'failed'"):
            run_stage(stage_named(stage), recipe, folder)


def test_a_failed_harvest_leaves_no_training_data_and_train_refuses(tmp_path: Path) -> None:
    path = tiny_recipe(tmp_path, "poisoned")
    recipe = load_recipe(path)
    folder = RunFolder.for_recipe(recipe, base=tmp_path / "runs")
    run_stage(stage_named("harvest"), recipe, folder)
    with folder.train_data.open("a") as handle:  # a hand edit after the harvest
        handle.write(json.dumps({"instruction": "x" * 20, "input": "", "output": "y" * 40}) + "\n")
    with pytest.raises(StaleStageError, match="harvest's outputs changed or vanished since it ran"):
        run_stage(stage_named("train"), recipe, folder)

    failing = load_recipe(tiny_recipe(tmp_path, "poisoned", min_records=100000))
    with pytest.raises(BadInputError, match="only .* records survived"):
        run_stage(stage_named("harvest"), failing, folder)
    assert not folder.train_data.exists()
    assert (folder.failed_dir("harvest") / folder.train_data.relative_to(folder.root)).is_file()
    env = {**os.environ, "BASTION_RUNS": str(tmp_path / "runs")}
    proc = subprocess.run(
        [sys.executable, "-m", "bastion", "train", str(path)], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 3, proc.stderr
    assert "train reads what harvest writes, and its last run ended 'failed'" in proc.stderr
    assert f"run `bastion harvest {path}` first" in proc.stderr and "Traceback" not in proc.stderr
