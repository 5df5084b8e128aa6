"""The harvest stage end to end: the demo corpus served on loopback, crawled, gated, deduplicated,
written as Alpaca JSONL with a report; then SIGKILL-and-resume gives the same records."""

from __future__ import annotations

import json
import os
import re
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

from bastion.recipe import load_recipe
from bastion.run_folder import RunFolder
from bastion.runner import run_stage, stage_named

pytestmark = pytest.mark.slow

CORPUS = REPO / "recipes" / "corpus" / "cloudsec-mini"


def tiny_recipe(tmp_path: Path, name: str, delay: float = 0.0, extra_sources: str = "") -> Path:
    """A copy of tiny-cpu.yaml with its own name, an absolute corpus path and a per-host delay."""
    text = (REPO / "recipes" / "tiny-cpu.yaml").read_text()
    text = text.replace("name: tiny-cpu", f"name: {name}")
    text = text.replace("path: corpus/cloudsec-mini", f"path: {CORPUS}")
    text = text.replace("delay_seconds: 0.0", f"delay_seconds: {delay}")
    if extra_sources:
        text = text.replace("  heldout:\n", extra_sources + "  heldout:\n", 1)
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def harvest(recipe_path: Path, runs: Path) -> Path:
    recipe = load_recipe(recipe_path)
    run_stage(stage_named("harvest"), recipe, RunFolder.for_recipe(recipe, base=runs))
    return runs / recipe.name / "data"


@pytest.fixture(scope="module")
def harvested(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("harvest")
    return harvest(tiny_recipe(tmp, "harvest-e2e"), tmp / "runs")


def page_path(url: str) -> str:
    """The corpus file a served URL came from ("/" serves index.html)."""
    return url.split("/", 3)[3] or "index.html"


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
    pages = {page_path(s["url"]) for s in sources}
    heldout = {page_path(p["url"]) for p in read_jsonl(harvested / "heldout.jsonl")}
    expected = {str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*.html") if "drafts" not in p.parts}
    # the printable copy is a near-duplicate: its sections go, the original's stay; held-out pages never train
    assert expected - pages - heldout <= {"logging/incident-response-printable.html"}
    assert not pages & heldout
    assert "logging/incident-response.html" in pages | heldout
    for s in sources:
        assert s["title"] and s["section"] and len(s["content_hash"]) == 64 and s["fetched_at"]


def word_sequences(text: str, n: int = 13) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def test_heldout_pages_share_no_13_word_sequence_with_the_training_data(harvested: Path) -> None:
    pages = read_jsonl(harvested / "heldout.jsonl")
    assert len(pages) >= 1
    for page in pages:
        assert page["text"] and page["url"] and page["title"] and len(page["content_hash"]) == 64
    held = set().union(*(word_sequences(p["text"]) for p in pages))
    assert len(held) > 100  # the pages have text to compare
    records = read_jsonl(harvested / "train.jsonl")
    shared = [r["instruction"][:60] for r in records if word_sequences(" ".join(r.values())) & held]
    assert shared == []
    quality = json.loads((harvested / "quality.json").read_text())
    assert quality["heldout"]["pages"] == len(pages) and "## Held-out pages" in (harvested / "quality.md").read_text()


def test_quality_report_counts_and_histograms(harvested: Path) -> None:
    quality = json.loads((harvested / "quality.json").read_text())
    assert quality["pages"]["fetched"] >= 24
    assert quality["records"]["kept"] == len(read_jsonl(harvested / "train.jsonl"))
    assert quality["dedup"]["near"] + quality["dedup"]["exact"] >= 3  # the printable copy
    assert quality["diversity"]["distinct_templates"] >= 8
    assert quality["diversity"]["distinct_intents"] >= 7  # of 8; the held-out pages take some sections
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


def test_a_near_copy_of_a_heldout_page_never_trains(tmp_path: Path) -> None:
    """Four near-copies of one page and one other page: the held-out page is a copy (seed 2), so the
    other copies are dropped as overlapping it, and only the unique page's sections train."""
    local = tmp_path / "pages"
    local.mkdir()
    original = (CORPUS / "iam" / "least-privilege.html").read_text()
    for i in range(4):
        (local / f"copy-{i}.html").write_text(original.replace("<title>", f"<title>Copy {i} of "))
    shutil.copy(CORPUS / "network" / "segmentation.html", local / "unique.html")
    text = tiny_recipe(tmp_path, "heldout-copies").read_text()
    text = text.replace("kind: served\n      path: " + str(CORPUS), f"kind: local\n      path: {local}")
    text = re.sub(r"  heldout:\n    fraction: [^\n]*\n", "  heldout: {fraction: 0.2, seed: 2}\n", text)
    text = text.replace("min_records: 5", "min_records: 1")
    path = tmp_path / "heldout-copies.yaml"
    path.write_text(text)
    data = harvest(path, tmp_path / "runs")
    (page,) = read_jsonl(data / "heldout.jsonl")
    assert "copy-" in page["url"]
    sources = read_jsonl(data / "sources.jsonl")
    assert {Path(s["url"]).name for s in sources} == {"unique.html"}
    quality = json.loads((data / "quality.json").read_text())
    assert quality["heldout"]["overlapping_sections_dropped"] > 0
    held = word_sequences(page["text"])
    assert not any(word_sequences(" ".join(r.values())) & held for r in read_jsonl(data / "train.jsonl"))
