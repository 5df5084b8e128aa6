"""The harvest stage end to end: the demo corpus served on loopback, crawled, gated, deduplicated,
written as Alpaca JSONL with a report; then SIGKILL-and-resume gives the same records."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
from conftest import REPO

from bastion.manifest import RunFolder
from bastion.recipe import load_recipe
from bastion.stages import run_stage

pytestmark = pytest.mark.slow

CORPUS = REPO / "recipes" / "corpus" / "cloudsec-mini"


def tiny_recipe(tmp_path: Path, name: str, delay: float = 0.0, extra_sources: str = "") -> Path:
    """A copy of tiny-cpu.yaml with its own name, an absolute corpus path and a per-host delay."""
    text = (REPO / "recipes" / "tiny-cpu.yaml").read_text()
    text = text.replace("name: tiny-cpu", f"name: {name}")
    text = text.replace("path: corpus/cloudsec-mini", f"path: {CORPUS}")
    text = text.replace("delay_seconds: 0.0", f"delay_seconds: {delay}")
    if extra_sources:
        text = text.replace("  quality:\n", extra_sources + "  quality:\n", 1)
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def harvest(recipe_path: Path, runs: Path) -> Path:
    recipe = load_recipe(recipe_path)
    run_stage("harvest", recipe, RunFolder.for_recipe(recipe, base=runs))
    return runs / recipe.name / "data"


@pytest.fixture(scope="module")
def harvested(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("harvest")
    return harvest(tiny_recipe(tmp, "harvest-e2e"), tmp / "runs")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_train_jsonl_is_alpaca_only_and_valid(harvested: Path) -> None:
    records = read_jsonl(harvested / "train.jsonl")
    schema = json.loads((REPO / "schemas" / "alpaca.schema.json").read_text())
    assert len(records) >= 30
    for record in records:
        jsonschema.validate(record, schema)
        assert set(record) == {"instruction", "input", "output"}
    outputs = [r["output"] for r in records]
    assert len(set(outputs)) == len(outputs)


def test_robots_disallowed_draft_is_not_harvested(harvested: Path) -> None:
    text = (harvested / "train.jsonl").read_text()
    assert "DRAFT NOT FOR PUBLICATION" not in text
    urls = {s["url"] for s in read_jsonl(harvested / "sources.jsonl")}
    assert not any("/drafts/" in u for u in urls)
    assert not any("example.com" in u for u in urls)


def test_every_published_page_is_harvested_with_provenance(harvested: Path) -> None:
    sources = read_jsonl(harvested / "sources.jsonl")
    pages = {s["url"].split("/", 3)[3] or "index.html" for s in sources}  # "/" serves index.html
    expected = {str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*.html") if "drafts" not in p.parts}
    # the printable copy is a near-duplicate: its sections go, the original's stay
    assert expected - pages <= {"logging/incident-response-printable.html"}
    assert "logging/incident-response.html" in pages
    for s in sources:
        assert s["title"] and s["section"] and len(s["content_hash"]) == 64 and s["fetched_at"]


def test_quality_report_counts_and_histograms(harvested: Path) -> None:
    quality = json.loads((harvested / "quality.json").read_text())
    assert quality["pages"]["fetched"] >= 24
    assert quality["records"]["kept"] == len(read_jsonl(harvested / "train.jsonl"))
    assert quality["dedup"]["near"] + quality["dedup"]["exact"] >= 3  # the printable copy
    assert quality["diversity"]["distinct_templates"] >= 8
    assert quality["diversity"]["distinct_intents"] == 8
    assert (
        sum(quality["sections"]["rejected"].values()) + quality["sections"]["passed"] == quality["sections"]["chunks"]
    )
    for png in ("length_hist.png", "grade_hist.png"):
        assert (harvested / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (harvested / "quality.md").read_text()
    assert "## Quality gates" in md and "Instruction diversity" in md


def test_records_fit_sequence_len(harvested: Path) -> None:
    from transformers import AutoTokenizer

    from bastion.tiny_model import tiny_model_dir

    tok = AutoTokenizer.from_pretrained(tiny_model_dir())
    recipe = load_recipe("tiny-cpu.yaml")
    for r in read_jsonl(harvested / "train.jsonl"):
        messages = [
            {"role": "system", "content": recipe.system_prompt},
            {"role": "user", "content": r["instruction"]},
            {"role": "assistant", "content": r["output"]},
        ]
        ids = tok.apply_chat_template(messages, tokenize=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        assert len(ids) <= recipe.train["sequence_len"]


def test_repeated_harvest_keeps_the_same_records_and_rejects_new_near_duplicates(
    harvested: Path, tmp_path: Path
) -> None:
    runs = harvested.parent.parent
    before = (harvested / "train.jsonl").read_bytes()
    # the same recipe again, plus a local folder holding a near-copy of an already admitted page
    local = tmp_path / "local"
    local.mkdir()
    shutil.copy(CORPUS / "iam" / "least-privilege.html", local / "copy.html")
    recipe_path = tiny_recipe(
        tmp_path, "harvest-e2e", extra_sources=f"    - name: local-copy\n      kind: local\n      path: {local}\n"
    )
    data = harvest(recipe_path, runs)
    after = (data / "train.jsonl").read_bytes()
    assert after == before
    quality = json.loads((data / "quality.json").read_text())
    assert quality["dedup"]["exact"] + quality["dedup"]["near"] >= 5


def test_sigkill_and_resume_gives_the_same_records(tmp_path: Path, harvested: Path) -> None:
    reference = read_jsonl(harvested / "train.jsonl")
    runs = tmp_path / "runs"
    recipe_path = tiny_recipe(tmp_path, "harvest-e2e", delay=0.15)
    env = {**os.environ, "BASTION_RUNS": str(runs)}
    cmd = [sys.executable, "-m", "bastion", "harvest", str(recipe_path)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = runs / "harvest-e2e" / "data" / "state.sqlite"
    deadline = time.monotonic() + 120
    pages = 0
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if state.exists():
            try:
                with sqlite3.connect(state, timeout=1) as conn:
                    pages = conn.execute("SELECT COUNT(DISTINCT url) FROM chunks").fetchone()[0]
            except sqlite3.Error:
                continue
            if pages >= 6:
                break
    assert proc.poll() is None, "the harvest ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert 6 <= pages < 24
    assert not (runs / "harvest-e2e" / "data" / "train.jsonl").exists()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = read_jsonl(runs / "harvest-e2e" / "data" / "train.jsonl")
    assert resumed == reference
